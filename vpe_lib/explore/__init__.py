"""Interactive explorers (ipywidgets). `predictions`: watch a future being decoded from one frame.
The latent and UMAP explorers are in vpe_lib.explorers (to move here with the house's regrouping)."""

"""Interactive explorers (ipywidgets): `latents` (the codes under a frame, the UMAP of the latents, with
selection) and `predictions` (watch a future being decoded from one frame)."""

"""Figures and tables the notebooks draw from the stages' files: images and curves (`plots`), the segmentation
study (`study_plots`), the hover embedding (`hover_umap`), number formatting (`tables`)."""

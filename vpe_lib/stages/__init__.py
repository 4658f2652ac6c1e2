"""Pipeline stages: each reads earlier stages' files under runs/<run>/ and writes its own.

01_data -> data/, 02_pretrain -> pretrain/, 03_latent_analysis -> latents/,
04_heads -> heads/, 05_results -> results/. The notebooks call these and plot.
"""

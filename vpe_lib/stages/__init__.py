"""Pipeline stages: each reads earlier stages' files under runs/<run>/ and writes its own.

01_data -> data/, 02_pretrain -> pretrain/, 03_predict -> predict/, 04_latent_analysis -> latents/,
05_heads -> heads/, 06_results -> results/. The notebooks call these and plot.
"""

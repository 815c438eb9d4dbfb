"""Stage 6: one package per notebook (``expN`` for ``notebooks/0N_*.ipynb``): its presets for each scale, its
pipeline and its figures. Experiments import the core stages, never each other."""

"""Experiment 2 (notebook 02): colour fine-tunes that correlate blue and green, and the exclusive latents a
crosscoder then learns on them."""

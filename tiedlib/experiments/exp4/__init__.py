"""Experiment 4 (notebook 04): exclusive latents are less exclusive than shared ones (decoder max-cosines)."""

"""Experiment 1 (notebook 01): the tied crosscoder, firing-count ratios, top activations of a triple's parts."""

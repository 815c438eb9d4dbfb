"""Notebook 05: does the tied crosscoder tie? The synthetic eta sweep, the variants, the lab pair and the colour toy."""

"""Experiment 3 (notebook 03): overlap of refusal ('cannot') and harmfulness latents in base vs chat SAEs."""

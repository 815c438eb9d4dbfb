"""Settings of notebook 00 (the lab pair) per scale."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class LabPageSettings:
    lab_config: str
    """Lab preset (``tiedlib.lab.LabConfig.from_name``). The paper scale uses Gemma in the experiment notebooks; this
    page always describes a lab pair, the tiny one at paper scale."""
    n_docs: int
    """Held-out documents per source for the corpus statistics."""
    n_eval_docs: int
    """Held-out documents per source for the next-token losses."""
    n_prompts: int
    """Held-out requests per kind for the refusal/answer rates (greedy generation)."""


TABLE = {
    "smoke": LabPageSettings("smoke", n_docs=200, n_eval_docs=40, n_prompts=20),
    "tiny": LabPageSettings("tiny", n_docs=2000, n_eval_docs=200, n_prompts=100),
    "paper": LabPageSettings("tiny", n_docs=2000, n_eval_docs=200, n_prompts=100),
}

"""Settings of notebook 00 (the lab pair) per scale."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class LabPageSettings:
    """What the lab-pair page (notebook 00) builds, counts and evaluates."""

    lab_config: str
    """Lab preset (``tiedlib.lab.LabConfig.from_name``). The paper scale uses Gemma in the experiment notebooks; this
    page always describes a lab pair, the tiny one at paper scale."""
    n_docs: int
    """Held-out documents per source for the corpus statistics."""
    n_eval_docs: int
    """Held-out documents per source for the next-token losses."""
    n_prompts: int
    """Held-out requests per kind for the refusal/answer rates (greedy generation)."""

    def __post_init__(self) -> None:
        if min(self.n_docs, self.n_eval_docs, self.n_prompts) < 1:
            raise ValueError(f"n_docs, n_eval_docs and n_prompts must be positive, got {self.n_docs}, "
                             f"{self.n_eval_docs}, {self.n_prompts}")


TABLE = {
    "smoke": LabPageSettings("smoke", n_docs=200, n_eval_docs=40, n_prompts=20),
    "tiny": LabPageSettings("tiny", n_docs=2000, n_eval_docs=200, n_prompts=100),
    "paper": LabPageSettings("tiny", n_docs=2000, n_eval_docs=200, n_prompts=100),
}

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
    n_probe: int = 120
    """Prompts per side of each probe contrast (:func:`tiedlib.lab.probe_table`)."""
    n_probe_prompts: int = 60
    """Held-out harmful prompts of the probe suite's causal check and behaviour rates."""

    def __post_init__(self) -> None:
        if min(self.n_docs, self.n_eval_docs, self.n_prompts, self.n_probe, self.n_probe_prompts) < 1:
            raise ValueError(f"n_docs, n_eval_docs, n_prompts, n_probe and n_probe_prompts must be positive, got "
                             f"{self.n_docs}, {self.n_eval_docs}, {self.n_prompts}, {self.n_probe}, "
                             f"{self.n_probe_prompts}")


TABLE = {
    "smoke": LabPageSettings("smoke", n_docs=200, n_eval_docs=40, n_prompts=20, n_probe=40, n_probe_prompts=20),
    "tiny": LabPageSettings("tiny", n_docs=2000, n_eval_docs=200, n_prompts=100),
    "paper": LabPageSettings("tiny", n_docs=2000, n_eval_docs=200, n_prompts=100),
}

"""Experiment 1 (train the tied crosscoder; firing ratios; top activations; ground truth) at each scale.

``paper`` is the write-up's run: Gemma-2-2b / -it, layer 14, 16,384 x 3 latents, eta = 2, 250M tokens of the
Pile/LMSys mix at 4,096 tokens a step (61,035 steps), Adam lr 5e-5, l1 coefficient 2. ``tiny`` and ``smoke`` scale it
down to the offline lab pair, with a larger learning rate so that a few thousand steps on a CPU converge.
"""

from __future__ import annotations

from dataclasses import dataclass

from tiedlib.config import scaled_l1
from tiedlib.crosscoders.checkpoints import RELEASES, LatentRef, release_id

TIED_RELEASE = release_id("sa7270/tied-crosscoder", RELEASES["sa7270/tied-crosscoder"])
""":func:`~tiedlib.crosscoders.checkpoints.release_id` of the released tied crosscoder (the write-up's run)."""
WRITEUP_REFUSAL_LATENT = LatentRef(10615, TIED_RELEASE)
"""The write-up's refusal triple (Figure 3), valid only in the released tied checkpoint."""


@dataclass(frozen=True)
class Exp1Settings:
    pair: str
    """Model pair for :func:`tiedlib.pairs.load_pair` (lab pairs have ground-truth concept labels)."""
    n_latents: int
    """Latent triples of the tied crosscoder (3 x n_latents latents)."""
    train_docs: int
    """Documents (lab) or sequences (paper) whose activations train the crosscoders."""
    n_steps: int
    batch_size: int
    lr: float
    l1_coeff: float
    eval_docs: int
    """Held-out documents per dataset (web and chat) for firing counts, contexts and ground truth."""
    standard_n_latents: int
    """Latents of the standard-crosscoder baseline (trained on the same data)."""
    standard_n_steps: int
    eta: float = 2.0
    layer: int | None = None
    """Harvested layer (None: the pair's default; 14 for Gemma-2-2b)."""
    web_fraction: float = 0.5
    """Share of web (Pile-like) documents in the training mix; the rest are chat (LMSys-like)."""
    seq_len: int = 1024
    """Paper pair only: tokens per sequence."""
    model_batch_size: int = 32
    """Sequences per forward pass while harvesting."""
    exclude_template_tokens: bool = False
    """Drop chat-template tokens from training and analysis (the write-up kept them)."""
    min_frequency: float = 5e-4
    """Firing-ratio filter: drop triples firing on under this fraction of tokens (write-up: 0.05%)."""
    n_corner: int = 10
    """Top-left / bottom-right latents selected from the ratio scatter."""
    top_k: int = 10
    """Contexts shown per latent part."""
    n_neighbours: int = 5
    """Baseline: base decoder vectors closest to a chat-exclusive latent's chat vector."""
    auroc_threshold: float = 0.75
    """AUROC a part must reach to "detect" a concept in the AUROC columns (shown, never used to choose)."""
    precision_k: int = 20
    """Ground truth: parts are scored by precision at this k (and P(concept | part fires)) at each concept's
    positions (:data:`tiedlib.analysis.concepts.POSITIONAL_CONCEPTS`: end of prompt for refusals and requests)."""
    precision_threshold: float = 0.8
    """The Figure-3 triple is "found" when both its parts reach this precision at k (chance, a part firing at random,
    is the share of ends of prompt followed by a refusal: about 0.3 on the tiny pair's chat and web samples)."""
    min_exclusive_firings: int = 20
    """A triple is a top-left (bottom-right) corner only if its chat (base) part fires on at least this many held-out
    tokens (issue 16)."""
    corner_ratio: float = 2.0
    """Corner shares: a triple counts in the top-left corner when its chat part fires at least this many times as
    often as its shared part and as its base part (bottom-right: base over shared and chat), besides the floor above."""
    n_boot: int = 1000
    """Bootstrap resamples of held-out documents for the corner shares' 95% intervals."""
    focus_latent: LatentRef | int | None = None
    """Triple whose contexts are shown when there is no ground truth to pick one. The write-up's 10615 (refusals)
    is a :class:`LatentRef` to the released tied checkpoint: :func:`focus_triple` refuses it for any other crosscoder
    (a plain int is an index chosen in the crosscoder at hand). The paper preset trains its own crosscoder, so it has
    none; to read the write-up's latent, pass ``checkpoint=<tied_crosscoder_eta_2.pt>`` and
    ``focus_latent=WRITEUP_REFUSAL_LATENT``."""
    checkpoint: str | None = None
    """A released tied checkpoint (folder or .pt) to analyse instead of training (see ``tiedlib.load_crosscoder``).
    The releases store no normalisation factors: they are estimated on this experiment's training activations."""
    standard_checkpoint: str | None = None
    """A released standard checkpoint for the baseline instead of training one."""
    device: str = "cpu"
    log_every: int = 50
    seeds: tuple[int, ...] = (0, 1, 2)
    """Seeds (crosscoder initialisation and batch order) of the short tied runs whose chat-vs-base comparison gets a
    95% interval (:mod:`.seeds`); empty: no seed runs (the paper pair, whose activations are never all in memory)."""
    seed_steps: int = 400
    """Training steps of each seed run (shorter than ``n_steps`` to fit the book's time budget)."""


TABLE: dict[str, Exp1Settings] = {
    "smoke": Exp1Settings(
        pair="smoke", n_latents=128, train_docs=300, n_steps=150, batch_size=256, lr=2e-3, l1_coeff=0.5,
        eval_docs=60, standard_n_latents=128, standard_n_steps=100, top_k=5, n_corner=5, log_every=10,
        seeds=(0, 1), seed_steps=10, precision_k=5, min_exclusive_firings=2, n_boot=200,
    ),
    "tiny": Exp1Settings(
        pair="tiny", n_latents=512, train_docs=3000, n_steps=2500, batch_size=512, lr=1e-3, l1_coeff=scaled_l1(128),
        eval_docs=400, standard_n_latents=512, standard_n_steps=1500,
    ),
    "paper": Exp1Settings(
        pair="gemma-2-2b", layer=14, n_latents=16384, train_docs=250_000, n_steps=61_035, batch_size=4096, lr=5e-5,
        l1_coeff=2.0, eval_docs=128, standard_n_latents=16384, standard_n_steps=61_035, model_batch_size=8,
        device="cuda", log_every=500, top_k=10, seeds=(),
    ),
}  # fmt: skip
"""Settings per scale; use ``tiedlib.config.pick(TABLE, SCALE, **overrides)``."""

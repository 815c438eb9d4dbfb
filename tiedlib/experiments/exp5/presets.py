"""Issue 8, "does the tied crosscoder tie?": settings per scale for notebook 05.

Three parts share one table row:

* the synthetic tying benchmark (:func:`~.tying.run_tying_benchmark`): ``bench_size`` is a key of
  :data:`~.tying.BENCHMARK_SIZES` or a :class:`~.tying.BenchmarkSize` (smoke: a toy size);
* the lab pair (paper: Gemma-2-2b / -it layer 14): the write-up's tied crosscoder (eta 2) and ``variant`` trained on
  the same activations, sized like Experiment 1;
* the colour toy (:class:`tiedlib.pairs.colours.ColourToyConfig`, the same fine-tunes notebook 02 caches) and the
  two colour crosscoders trained on it (the ``colour_*`` fields: Experiment 2's crosscoder settings at each scale,
  with 256 instead of 512 latents at the tiny scale);
* issue 16's positive control (:class:`ControlSettings`, :mod:`.positive_control`): a direction planted in the lab
  pair's activations at different positions in the two models, and three short crosscoder runs on them.
"""

from __future__ import annotations

from dataclasses import dataclass

from tiedlib.experiments.exp5.tying import BenchmarkSize
from tiedlib.pairs.colours import COLOUR_TOY, ColourToyConfig
from tiedlib.synthetic.benchmark import ETAS, SyntheticConfig

ALL_VARIANTS = ("standard", "standard_designated", "tied", "tied_equal", "tied_max", "tied_unit", "tied_batchtopk")

SMOKE_SIZE = BenchmarkSize(
    SyntheticConfig(d_model=16, n_shared=6, n_timing=4, n_direction=3, n_base_only=3, n_chat_only=3, n_rows=4000,
                    fire_prob_min=0.05, fire_prob_max=0.1, noise_std=0.0),
    n_latents=24, n_steps=150, batch_size=256, n_eval=2048,
)  # fmt: skip


@dataclass(frozen=True)
class ControlSettings:
    """Issue 16's positive control: where, how strongly and on what a direction ``d`` is planted, and the three
    crosscoders (standard, the write-up's tied, the recommended tied) trained on the planted rows."""

    docs: int = 300
    """Training documents of ``pair`` harvested for the control (Experiment 1's web/chat mix)."""
    rate: float = 0.03
    """|A| = |B| = ``rate`` x tokens: ``d`` is added to the base model at A and to the chat model at B."""
    overlap: float = 0.34
    """|A & B| / |A|: where both models carry ``d`` (the rest of A and of B carries it in one model only)."""
    scale: float = 1.0
    """Mean magnitude of the planted ``d``, in units of the mean (normalised) row norm."""
    spread: float = 0.5
    """Magnitudes are ``scale x U(1 - spread, 1 + spread)`` x the mean row norm, one per position."""
    avoid_top: int = 8
    """``d`` is orthogonal to the top ``avoid_top`` principal directions of the rows."""
    seed: int = 0
    """Seeds the sets, ``d``, the crosscoders' initialisation and batch order of one run."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """The notebook repeats the control once per seed (new sets, ``d`` and crosscoders; the same harvested rows)."""
    n_latents: int = 128
    """Latents of the standard crosscoder = triples of each tied one."""
    n_steps: int = 600
    batch_size: int = 256
    lr: float = 2e-3
    l1_coeff: float = 0.5
    eta: float = 2.0
    """eta of the write-up's tied crosscoder (the recommended one keeps its own, 1.5)."""
    threshold: float = 0.9
    """A decoder half "is" ``d`` above this cosine."""
    exclusive_below: float = 0.3
    """A standard latent is exclusive when its other decoder half is under this fraction of its own."""


@dataclass(frozen=True)
class Exp5Settings:
    # ---- synthetic benchmark
    bench_size: str | BenchmarkSize
    """Key of :data:`~.tying.BENCHMARK_SIZES` (``"small"``, ``"book"``) or a :class:`BenchmarkSize`."""
    bench_seeds: tuple[int, ...]
    bench_variants: tuple[str, ...] = ALL_VARIANTS
    bench_etas: tuple[float, ...] = ETAS
    ev_tolerance: float = 0.03
    """A fix "keeps" explained variance when its mean EV is within this of the standard crosscoder's."""
    grid: str = "book"
    """Scale of issue 15's robustness grid (a key of :data:`tiedlib.synthetic.grid.GRID_SCALES`)."""
    # ---- lab pair (Experiment 1's data)
    pair: str = "tiny"
    layer: int | None = None
    n_latents: int = 256
    """Latent triples of both tied crosscoders."""
    train_docs: int = 1000
    n_steps: int = 800
    batch_size: int = 512
    lr: float = 1e-3
    l1_coeff: float = 0.5
    eval_docs: int = 150
    eta: float = 2.0
    """eta of both lab crosscoders (the write-up's value)."""
    variant: str = "tied_equal"
    """The fix trained next to the write-up's tied crosscoder (a key of :data:`~.tying.VARIANTS`)."""
    web_fraction: float = 0.5
    seq_len: int = 1024
    model_batch_size: int = 32
    min_frequency: float = 5e-4
    auroc_threshold: float = 0.75
    one_sided_below: float = 0.3
    """A triple is one-sided when its smaller decoder half is under this fraction of its larger one."""
    device: str = "cpu"
    log_every: int = 100
    # ---- colour toy (the fine-tunes Experiment 2 caches) and its two crosscoders
    colour: ColourToyConfig = COLOUR_TOY["tiny"]
    """Fine-tuning and colour-set settings (:data:`tiedlib.pairs.colours.COLOUR_TOY`; the fine-tuned model is the base
    model of ``pair``). Equal to notebook 02's at each scale, so both reuse the same cached fine-tunes."""
    colour_n_latents: int = 256
    """Latent triples of the colour crosscoders."""
    colour_train_tokens: int = 100_000
    """Tokens each colour crosscoder trains on (the colour data repeated)."""
    colour_batch_size: int = 512
    colour_lr: float = 5e-4
    colour_l1_coeff: float = 2.0
    colour_eta: float = 2.0
    """eta of both colour crosscoders (the write-up's value)."""
    colour_seed: int = 0
    """Seeds the colour crosscoders' initialisation, training and batch order."""
    colour_top_k: int = 3
    """A blue/green index has both colours among its ``top_k`` positive logit-lens logits (write-up: top three)."""
    colour_fold_final_norm: bool = True
    """Fold the final RMSNorm gain into the unembedding before the logit lens, as sae-vis does."""
    min_colour_rate: float = 0.05
    """A colour-toy index counts only if one of its groups fires on at least this fraction of the colour tokens."""
    # ---- issue 16's positive control
    control: ControlSettings = ControlSettings()

    @property
    def colour_n_steps(self) -> int:
        """Training steps of each colour crosscoder: ``colour_train_tokens // colour_batch_size`` (at least 1)."""
        return max(1, self.colour_train_tokens // self.colour_batch_size)


TABLE: dict[str, Exp5Settings] = {
    "smoke": Exp5Settings(
        bench_size=SMOKE_SIZE, bench_seeds=(0,), bench_variants=("standard", "tied", "tied_equal"),
        bench_etas=(1.0, 2.0), grid="smoke",
        pair="smoke", n_latents=64, train_docs=200, n_steps=120, batch_size=256, lr=2e-3,
        eval_docs=40, log_every=20, colour=COLOUR_TOY["smoke"], colour_n_latents=128, colour_train_tokens=10_000,
        colour_batch_size=256, colour_lr=1e-3,
        control=ControlSettings(docs=60, rate=0.05, n_latents=32, n_steps=60, batch_size=128, seeds=(0, 1)),
    ),
    "tiny": Exp5Settings(
        bench_size="small", bench_seeds=(0,), bench_etas=(1.0, 2.0),
        bench_variants=("standard", "tied", "tied_equal", "tied_max", "tied_unit"),
        train_docs=1000, n_steps=800, eval_docs=150,
        colour=COLOUR_TOY["tiny"],  # same fine-tunes as notebook 02, a smaller crosscoder (256 triples, not 512)
    ),
    "paper": Exp5Settings(
        bench_size="book", bench_seeds=(0, 1, 2), grid="full",
        pair="gemma-2-2b", layer=14, n_latents=16384, train_docs=250_000,
        n_steps=61_035, batch_size=4096, lr=5e-5, l1_coeff=2.0, eval_docs=128, model_batch_size=8, device="cuda",
        log_every=500, colour=COLOUR_TOY["paper"], colour_n_latents=16_384, colour_train_tokens=60_000_000,
        colour_batch_size=4096, colour_lr=5e-5,
        # 64 documents of 1024 tokens: the harvest, its normalised copy and the planted copy take about 3.6 GB
        control=ControlSettings(docs=64, n_latents=4096, n_steps=4000, batch_size=2048, lr=1e-4, l1_coeff=2.0),
    ),
}  # fmt: skip
"""Settings per scale; use ``tiedlib.config.pick(TABLE, SCALE, **overrides)``."""

"""Configuration dataclasses: one per concern, JSON-serialisable, validated on construction.

Paper defaults follow REFERENCE.md (public replication of Anthropic's crosscoder on Gemma-2-2b vs -it, and the
tied-crosscoder write-up): n = 16,384 latents (per group for the tied one), decoder rows initialised to norm 0.08,
Adam lr 5e-5, batch 4,096 tokens, l1 coefficient 2 ramped over the first 5% of steps, lr decayed to 0 over the
last 20%, gradient-norm clip 1.0, eta = 2.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

BASE, CHAT = 0, 1
"""Index of each model along the ``n_models`` axis of activations and decoders."""
SHARED, BASE_ONLY, CHAT_ONLY = 0, 1, 2
"""Index of each group along the group axis of tied-crosscoder latents: shared, base, chat."""
GROUP_NAMES = ("shared", "base", "chat")

Architecture = Literal["standard", "tied"]
DecoderNorm = Literal["free", "equal", "unit"]
Activation = Literal["relu", "batchtopk"]
SharedPenalty = Literal["sum", "max", "written"]
GroupInit = Literal["copies", "one_sided", "contrast"]
ModelDtype = Literal["auto", "bfloat16", "float32", "float16"]
BufferDtype = Literal["bfloat16", "float32"]


class _JsonConfig:
    """Mixin: round-trip a dataclass through a JSON dict, refusing unknown keys with a clear error."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown config keys {unknown}; known keys are {sorted(known)}")
        return cls(**data)

    def save_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load_json(cls, path: str | Path):
        return cls.from_dict(json.loads(Path(path).read_text()))


@dataclass
class CrosscoderConfig(_JsonConfig):
    """Shape and sparsity penalty of a standard or tied crosscoder."""

    d_model: int
    """Width of each model's residual stream."""
    n_latents: int
    """Number of latents (standard) or of latent *triples* (tied: 3 x n_latents latents in all)."""
    architecture: Architecture = "standard"
    """``"standard"``: one latent per index. ``"tied"``: shared/base/chat latents over one decoder pair."""
    eta: float = 2.0
    """Tied only: weight of the exclusive (base/chat) firings in the sparsity penalty (write-up: eta = 2)."""
    dec_init_norm: float = 0.08
    """Norm of every per-model decoder row at initialisation (public crosscoder replication)."""
    norm_factors: list[float] | None = None
    """Per-model scalars (base, chat) that the *inputs* were multiplied by during training, or None when the
    crosscoder reads raw activations. Stored so a checkpoint says what it expects."""
    needs_norm_factors: bool = False
    """True for a checkpoint trained on normalised activations that did not store its factors (the public
    releases): it refuses raw activations until ``norm_factors`` are set. Cleared once they are."""
    decoder_norm: DecoderNorm = "free"
    """Tied only: constraint on the two decoder halves of each index, re-imposed after every optimizer step by
    :meth:`Crosscoder.apply_constraints_`. ``"free"`` (the write-up): no constraint. ``"equal"``: both halves are
    rescaled to the mean of their two norms (the sum of norms, hence the shared penalty, is kept). ``"unit"``: both
    halves have norm 1, so a shared firing costs exactly 2 and an exclusive one eta (issue 8: with free norms a triple
    can shrink one half and use its *shared* group as an exclusive latent)."""
    shared_penalty: SharedPenalty = "sum"
    """Tied only: weight of a shared firing. ``"sum"`` (the write-up): ``||d_base|| + ||d_chat||``. ``"max"``:
    ``2 max(||d_base||, ||d_chat||)``, so shrinking one half no longer makes the shared group a cheap exclusive.
    ``"written"`` (issue 15, the recommended configuration): one charge per triple on what it writes into each model,
    ``w_b + w_c + (eta - 1) |w_b - w_c|`` with ``w_m = (f_shared + f_m) ||d_m||``
    (:func:`~tiedlib.crosscoders.losses.written_disagreement_penalty`); built as
    :class:`~tiedlib.crosscoders.crosscoder.WrittenTiedCrosscoder`."""
    activation: Activation = "relu"
    """``"relu"``: every latent is ``ReLU(pre-activation)`` with an L1 penalty. ``"batchtopk"``: BatchTopK (Bussmann
    et al. 2024; used for crosscoders by Minder et al. 2025): in training keep the ``k * batch`` largest scores
    ``ReLU(pre) * decoder weight`` over the whole batch and all groups; in eval mode keep the scores above a threshold
    estimated during training (:func:`~tiedlib.crosscoders.variants.batch_topk`). Set ``TrainConfig.l1_coeff = 0``
    for pure BatchTopK."""
    k: float | None = None
    """BatchTopK only: average number of active latents per token (all groups together)."""
    n_designated_shared: int = 0
    """Standard only: the first ``n_designated_shared`` latents are designated shared (Anthropic, Feb 2025): one
    decoder vector used by both models (the two halves are kept equal) and a sparsity weight multiplied by
    ``designated_shared_penalty``."""
    designated_shared_penalty: float = 0.15
    """Multiplier of the designated shared latents' sparsity weight (Anthropic: lambda_shared / lambda_excl about
    0.1-0.2)."""
    k_groups: tuple[float, float, float] | None = None
    """Tied BatchTopK only (issue 15): keep ``k_groups[g] * batch`` latents of each group (shared, base, chat)
    separately, with one inference threshold per group, instead of one top-k over all groups. ``k`` is then their
    sum (set when None). None: the global BatchTopK of ``k``."""
    aux_k: int = 0
    """Auxiliary-k loss (Gao et al. 2024, arXiv 2406.04093, appendix A.2; issue 15): each training row also
    reconstructs the residual ``x - x_hat`` from its ``aux_k`` largest dead latents, adding ``aux_alpha`` x that
    squared error. Tied: only the base and chat groups can count as dead (each writes into its own model); standard:
    every latent. 0: off (no dead counter in the state dict)."""
    aux_alpha: float = 1 / 32
    """Weight of the auxiliary-k loss (Gao et al.: 1/32)."""
    dead_after_tokens: int = 10_000_000
    """A latent is dead for the auxiliary-k loss after this many training tokens without firing (Gao et al.: 10M)."""
    group_init: GroupInit = "copies"
    """Tied only: how the three encoder groups start (issue 15). ``"copies"`` (the write-up, the public replication):
    each group is a copy of the decoder's transpose, zero bias, so the three latents of a triple fire on the same rows.
    ``"one_sided"``: the shared group as before, the base group reads only ``x_base`` and the chat group only
    ``x_chat`` (the other model's reading zeroed). ``"contrast"``: the base group reads ``+x_base`` and ``-x_chat``
    along its index's direction, the chat group the mirror image
    (:func:`~tiedlib.crosscoders.variants.contrast_init_`)."""

    _NEW_DEFAULTS = {"k_groups": None, "aux_k": 0, "aux_alpha": 1 / 32, "dead_after_tokens": 10_000_000,
                     "group_init": "copies"}  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON dict; the issue-15 fields (``k_groups``, ``aux_k``, ...) only when not at their
        defaults, so configs that do not use them save the same JSON as before they existed."""
        out = dataclasses.asdict(self)
        for name, default in self._NEW_DEFAULTS.items():
            if out[name] == default:
                del out[name]
        if out.get("k_groups") is not None:
            out["k_groups"] = list(out["k_groups"])
        return out

    def __post_init__(self) -> None:
        if self.k_groups is not None:
            self.k_groups = tuple(float(v) for v in self.k_groups)  # type: ignore[assignment]
            if len(self.k_groups) != 3 or min(self.k_groups) < 0 or not sum(self.k_groups) > 0:
                raise ValueError(f"k_groups must be three non-negative numbers (shared, base, chat) with a positive "
                                 f"sum, got {self.k_groups}")  # fmt: skip
            if self.architecture != "tied" or self.activation != "batchtopk":
                raise ValueError("k_groups needs architecture='tied' and activation='batchtopk', got "
                                 f"{self.architecture!r} and {self.activation!r}")  # fmt: skip
            if self.k is None:
                self.k = sum(self.k_groups)
            elif abs(self.k - sum(self.k_groups)) > 1e-6 * max(1.0, self.k):
                raise ValueError(f"k={self.k} differs from the sum of k_groups {self.k_groups}; leave k unset")
            if max(self.k_groups) > self.n_latents:
                raise ValueError(f"k_groups {self.k_groups} exceed the {self.n_latents} latents of a group")
        if isinstance(self.aux_k, bool) or not isinstance(self.aux_k, int) or self.aux_k < 0:
            raise ValueError(f"aux_k must be a non-negative integer, got {self.aux_k!r}")
        if not self.aux_alpha > 0:
            raise ValueError(f"aux_alpha must be > 0, got {self.aux_alpha}")
        if self.dead_after_tokens <= 0:
            raise ValueError(f"dead_after_tokens must be > 0, got {self.dead_after_tokens}")
        if self.architecture not in ("standard", "tied"):
            raise ValueError(f"architecture must be 'standard' or 'tied', got {self.architecture!r}")
        if self.group_init not in ("copies", "one_sided", "contrast"):
            raise ValueError(f"group_init must be 'copies', 'one_sided' or 'contrast', got {self.group_init!r}")
        if self.group_init != "copies" and self.architecture != "tied":
            raise ValueError(f"group_init={self.group_init!r} needs architecture='tied' (a standard crosscoder has "
                             "one encoder group)")  # fmt: skip
        if self.d_model <= 0 or self.n_latents <= 0:
            raise ValueError(f"d_model and n_latents must be positive, got {self.d_model}, {self.n_latents}")
        if not self.eta > 0:
            raise ValueError(f"eta must be > 0, got {self.eta}")
        if self.dec_init_norm <= 0:
            raise ValueError(f"dec_init_norm must be > 0, got {self.dec_init_norm}")
        if self.norm_factors is not None:
            self.norm_factors = [float(v) for v in self.norm_factors]
            if len(self.norm_factors) != 2 or not all(v > 0 for v in self.norm_factors):
                raise ValueError(f"norm_factors must be two positive numbers (base, chat), got {self.norm_factors}")
            self.needs_norm_factors = False
        if self.decoder_norm not in ("free", "equal", "unit"):
            raise ValueError(f"decoder_norm must be 'free', 'equal' or 'unit', got {self.decoder_norm!r}")
        if self.shared_penalty not in ("sum", "max", "written"):
            raise ValueError(f"shared_penalty must be 'sum', 'max' or 'written', got {self.shared_penalty!r}")
        if self.shared_penalty == "written" and (self.activation != "relu" or self.decoder_norm != "free"):
            raise ValueError("shared_penalty='written' is defined for ReLU latents with free decoder norms "
                             f"(got activation={self.activation!r}, decoder_norm={self.decoder_norm!r})")
        if self.architecture != "tied" and (self.decoder_norm != "free" or self.shared_penalty != "sum"):
            raise ValueError(
                "decoder_norm and shared_penalty variants need architecture='tied' (in a standard "
                "crosscoder equal decoder halves would forbid model-exclusive latents)"
            )
        if self.activation not in ("relu", "batchtopk"):
            raise ValueError(f"activation must be 'relu' or 'batchtopk', got {self.activation!r}")
        if self.activation == "batchtopk":
            if self.k is None or not self.k > 0:
                raise ValueError(f"activation='batchtopk' needs k > 0 (active latents per token), got {self.k}")
            if self.k > self.n_groups * self.n_latents:
                raise ValueError(f"k={self.k} exceeds the number of latents {self.n_groups * self.n_latents}")
        elif self.k is not None:
            raise ValueError("k is only used with activation='batchtopk'")
        if self.n_designated_shared < 0 or self.n_designated_shared >= self.n_latents:
            raise ValueError(f"n_designated_shared must be in [0, n_latents), got {self.n_designated_shared}")
        if self.n_designated_shared and self.architecture != "standard":
            raise ValueError(
                "n_designated_shared needs architecture='standard' (in a tied one the shared group does that)"
            )
        if not self.designated_shared_penalty > 0:
            raise ValueError(f"designated_shared_penalty must be > 0, got {self.designated_shared_penalty}")

    @property
    def n_groups(self) -> int:
        return 3 if self.architecture == "tied" else 1


@dataclass
class TrainConfig(_JsonConfig):
    """Optimisation settings for :func:`tiedlib.training.train`."""

    n_steps: int
    """Number of optimizer steps (tokens seen = n_steps * the batch size of the data iterator)."""
    lr: float = 5e-5
    """Adam learning rate (public replication: 5e-5)."""
    beta1: float = 0.9
    """Adam beta1."""
    beta2: float = 0.999
    """Adam beta2."""
    l1_coeff: float = 2.0
    """Final sparsity coefficient."""
    l1_warmup_frac: float = 0.05
    """The sparsity coefficient rises linearly from 0 over this fraction of the steps."""
    lr_decay_frac: float = 0.2
    """The learning rate falls linearly to 0 over this final fraction of the steps."""
    grad_clip: float = 1.0
    """Maximum global gradient norm; 0 disables clipping."""
    seed: int = 0
    """Seed of torch and Python's RNGs at the start of training."""
    device: str = "cpu"
    """Device the crosscoder trains on (``"cpu"``, ``"cuda"``, ``"cuda:1"``...)."""
    log_every: int = 50
    """Metrics are computed and passed to ``log`` every this many steps (and at the last step)."""
    checkpoint_every: int = 0
    """Write a resumable checkpoint every this many steps (0: by elapsed time only, see ``checkpoint_minutes``).
    The last step always writes one."""
    checkpoint_minutes: float = 30.0
    """Also write a checkpoint once this many minutes have passed since the previous one (0: off), so that a long
    run killed or preempted loses at most this much work, whatever ``checkpoint_every`` says."""
    keep_checkpoints: int = 2
    """How many checkpoints to keep, newest first (0: all). At paper shapes one checkpoint (weights and Adam's two
    moments, fp32) takes about 3.6 GB."""
    tf32: bool = True
    """On CUDA, allow TF32 matrix products (Ampere and newer: fp32 products several times faster, inputs rounded to
    10 mantissa bits). Weights, gradients and Adam state stay fp32. No effect on CPU."""
    bf16: bool = False
    """Run the crosscoder's matrix products and latents in bfloat16 under ``torch.autocast`` (faster on GPUs with
    bf16 tensor cores, half the latent memory); weights, optimizer state and the loss terms stay fp32."""
    wandb_project: str | None = None
    """Log to Weights & Biases under this project (needs ``wandb`` installed)."""
    progress: bool = True
    """Show a tqdm progress bar."""

    def __post_init__(self) -> None:
        if self.n_steps <= 0:
            raise ValueError(f"n_steps must be positive, got {self.n_steps}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        for name in ("l1_warmup_frac", "lr_decay_frac"):
            v = getattr(self, name)
            if not 0 <= v <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {v}")
        if self.l1_coeff < 0 or self.grad_clip < 0:
            raise ValueError("l1_coeff and grad_clip must be >= 0")
        if self.log_every <= 0:
            raise ValueError(f"log_every must be positive, got {self.log_every}")
        if self.checkpoint_every < 0 or self.keep_checkpoints < 0 or self.checkpoint_minutes < 0:
            raise ValueError("checkpoint_every, checkpoint_minutes and keep_checkpoints must be >= 0")


@dataclass
class RunConfig(_JsonConfig):
    """Everything a command-line training run needs (see ``python -m tiedlib.cli train --help``)."""

    crosscoder: CrosscoderConfig
    train: TrainConfig
    pair: str = "tiny"
    """Model pair for :func:`tiedlib.pairs.load_pair`: ``"tiny"``, ``"smoke"`` (offline lab pairs) or
    ``"gemma-2-2b"``."""
    layer: int | None = None
    """Decoder layer whose input residual stream is read (default: the pair's, 14 for Gemma-2-2b)."""
    dtype: ModelDtype = "auto"
    """Weight dtype of the pair's models, loaded straight to the device in it; ``"auto"``: bfloat16 on CUDA, float32
    elsewhere."""
    out_dir: str = "runs/crosscoder"
    """Run folder: run.json, the token file and the crosscoder's run directory with its checkpoints."""
    batch_size: int = 4096
    """Activation rows (tokens) per optimizer step."""
    buffer_tokens: int = 2**19
    """Tokens per activation-buffer fill, shuffled together (rounded down to whole batches; the public runs
    shuffled 128 batches of 4,096). Gemma-2-2b in bf16: 9.2 KB a token, 4.8 GB for 2**19 tokens."""
    buffer_dtype: BufferDtype = "bfloat16"
    """Storage dtype of the activation buffer; batches are served as float32."""
    buffer_device: str | None = None
    """Where the buffer lives (default: the training device; ``"cpu"`` keeps it in pinned host memory)."""
    model_batch_size: int = 8
    """Sequences per harvesting forward pass."""
    seq_len: int = 1024
    """Tokens per sequence (the public runs' 1,024), BOS included."""
    dataset: str = "auto"
    """``"lab"`` (the lab pair's web/chat mix), ``"pretokenized"`` (the public runs' pre-tokenised Pile/LMSys mix)
    or ``"mix"`` (Pile and LMSys-Chat streamed and tokenised here, chat samples through the chat template);
    ``"auto"``: ``"lab"`` for lab pairs, ``"pretokenized"`` for Gemma-2-2b."""
    n_sequences: int = 0
    """Sequences to draw from the dataset; 0: enough for ``n_steps * batch_size`` harvestable tokens."""
    chat_fraction: float = 0.5
    """Share of chat samples in the ``"mix"`` dataset."""
    on_exhausted: str = "stop"
    """When the sequences run out: ``"stop"`` with a clear error, or ``"new_epoch"`` (reuse them, with a warning)."""
    eval_every: int = 0
    """Every this many steps (and at the end), the spliced next-token loss of both models with the crosscoder's
    reconstruction in place of the layer input, on ``eval_sequences`` held-out sequences (half web, half chat),
    logged as ``eval/...`` lines of metrics.jsonl; 0: off. Runs on the main process only; a run from a cache then
    loads the model pair there too."""
    eval_sequences: int = 16
    """Held-out sequences of the spliced-loss evaluation (``eval_every``)."""
    cache: str | None = None
    """Activation cache folder (written by ``python -m tiedlib.cli cache``) to train from instead of harvesting on
    the fly; its manifest must name the same pair, layer and width. Needed for data-parallel (torchrun) training."""
    cache_dtype: BufferDtype = "bfloat16"
    """Storage dtype of the activation cache's shards (bf16: 2 * d_model * 2 + 12 bytes a token, 9.2 KB for
    Gemma-2-2b)."""
    seqs_per_shard: int = 64
    """Sequences per activation-cache shard (one safetensors file; 64 x 1,024 Gemma-2-2b tokens in bf16: 605 MB)."""
    cache_window_shards: int = 4
    """Cache shards held in memory at once when training from a cache; rows are shuffled within these shards."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form notes stored with the run."""

    def __post_init__(self) -> None:
        if self.on_exhausted not in ("stop", "new_epoch"):
            raise ValueError(f"on_exhausted must be 'stop' or 'new_epoch', got {self.on_exhausted!r}")
        if self.eval_every < 0 or self.eval_sequences < 2:
            raise ValueError(f"need eval_every >= 0 and eval_sequences >= 2, got {self.eval_every}, "
                             f"{self.eval_sequences}")
        if not 0 <= self.chat_fraction <= 1:
            raise ValueError(f"chat_fraction must be in [0, 1], got {self.chat_fraction}")
        if min(self.batch_size, self.buffer_tokens, self.model_batch_size, self.seq_len) <= 0:
            raise ValueError("batch_size, buffer_tokens, model_batch_size and seq_len must be positive")
        if self.seqs_per_shard <= 0 or self.cache_window_shards <= 0:
            raise ValueError(f"seqs_per_shard and cache_window_shards must be positive, got {self.seqs_per_shard}, "
                             f"{self.cache_window_shards}")
        if self.cache_dtype not in ("bfloat16", "float32"):
            raise ValueError(f"cache_dtype must be 'bfloat16' or 'float32', got {self.cache_dtype!r}")
        if self.n_sequences < 0:
            raise ValueError(f"n_sequences must be >= 0, got {self.n_sequences}")
        if self.dtype not in ("auto", "bfloat16", "float32", "float16"):
            raise ValueError(f"dtype must be 'auto', 'bfloat16', 'float32' or 'float16', got {self.dtype!r}")
        if self.buffer_dtype not in ("bfloat16", "float32"):
            raise ValueError(f"buffer_dtype must be 'bfloat16' or 'float32', got {self.buffer_dtype!r}")
        if self.layer is not None and self.layer < 0:
            raise ValueError(f"layer must be >= 0, got {self.layer}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunConfig":
        data = dict(data)
        data["crosscoder"] = CrosscoderConfig.from_dict(data["crosscoder"])
        data["train"] = TrainConfig.from_dict(data["train"])
        return super().from_dict(data)


# Scales: every experiment defines a settings dataclass and a table {scale: settings}; notebooks call
# pick(TABLE, SCALE, **overrides), and nothing else in tiedlib branches on the scale.
Scale = Literal["smoke", "tiny", "paper"]
SCALES: tuple[str, ...] = ("smoke", "tiny", "paper")
_T = TypeVar("_T")



PAPER_L1 = 2.0
"""The write-up's l1 coefficient (its crosscoders on Gemma-2-2b, d_model 2304, inputs normalised to norm
sqrt(d_model))."""
PAPER_D_MODEL = 2304


def scaled_l1(d_model: int) -> float:
    """One sparsity scale across experiments (issue 16): the paper's l1 coefficient, 2 at d_model 2304, times
    ``sqrt(d_model / 2304)`` (0.47 for the tiny lab pair's 128). With inputs normalised to norm ``sqrt(d_model)``,
    a latent's activation grows like ``sqrt(d_model)`` while the reconstruction error it removes grows like
    ``d_model``, so the penalty per unit of activation keeps its weight relative to the error when l1 scales with
    ``sqrt(d_model)``."""
    if d_model < 1:
        raise ValueError(f"d_model must be positive, got {d_model}")
    return PAPER_L1 * math.sqrt(d_model / PAPER_D_MODEL)


def pick(table: dict[str, _T], scale: str, **overrides) -> _T:
    """The settings of ``scale`` from ``table``, with single fields replaced by ``overrides``.

    Raises a ValueError naming the valid scales, or the valid fields when an override is unknown.
    """
    if scale not in table:
        raise ValueError(f"unknown scale {scale!r}; choose one of {sorted(table)}")
    settings = table[scale]
    fields = {f.name for f in dataclasses.fields(settings)}  # type: ignore[arg-type]
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown setting(s) {unknown}; valid settings are {sorted(fields)}")
    return dataclasses.replace(settings, **overrides)  # type: ignore[type-var]

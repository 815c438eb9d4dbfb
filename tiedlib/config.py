"""Configuration dataclasses: one per concern, JSON-serialisable, validated on construction.

Paper defaults follow REFERENCE.md (public replication of Anthropic's crosscoder on Gemma-2-2b vs -it, and the
tied-crosscoder write-up): n = 16,384 latents (per group for the tied one), decoder rows initialised to norm 0.08,
Adam lr 5e-5, batch 4,096 tokens, l1 coefficient 2 ramped over the first 5% of steps, lr decayed to 0 over the
last 20%, gradient-norm clip 1.0, eta = 2.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

BASE, CHAT = 0, 1
"""Index of each model along the ``n_models`` axis of activations and decoders."""
SHARED, BASE_ONLY, CHAT_ONLY = 0, 1, 2
"""Index of each group along the group axis of tied-crosscoder latents: shared, base, chat."""
GROUP_NAMES = ("shared", "base", "chat")

Architecture = Literal["standard", "tied"]


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

    def __post_init__(self) -> None:
        if self.architecture not in ("standard", "tied"):
            raise ValueError(f"architecture must be 'standard' or 'tied', got {self.architecture!r}")
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

    @property
    def n_groups(self) -> int:
        return 3 if self.architecture == "tied" else 1


@dataclass
class TrainConfig(_JsonConfig):
    """Optimisation settings for :func:`tiedlib.training.train`."""

    n_steps: int
    """Number of optimizer steps (tokens seen = n_steps * the batch size of the data iterator)."""
    lr: float = 5e-5
    beta1: float = 0.9
    beta2: float = 0.999
    l1_coeff: float = 2.0
    """Final sparsity coefficient."""
    l1_warmup_frac: float = 0.05
    """The sparsity coefficient rises linearly from 0 over this fraction of the steps."""
    lr_decay_frac: float = 0.2
    """The learning rate falls linearly to 0 over this final fraction of the steps."""
    grad_clip: float = 1.0
    """Maximum global gradient norm; 0 disables clipping."""
    seed: int = 0
    device: str = "cpu"
    log_every: int = 50
    """Metrics are computed and passed to ``log`` every this many steps (and at the last step)."""
    checkpoint_every: int = 0
    """Write a resumable checkpoint every this many steps (0: only at the end)."""
    keep_checkpoints: int = 0
    """How many intermediate checkpoints to keep (0: all)."""
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
        if self.checkpoint_every < 0 or self.keep_checkpoints < 0:
            raise ValueError("checkpoint_every and keep_checkpoints must be >= 0")


@dataclass
class RunConfig(_JsonConfig):
    """Everything a command-line training run needs (see ``python -m tiedlib.train --help``)."""

    crosscoder: CrosscoderConfig
    train: TrainConfig
    pair: str = "tiny"
    """Model pair for :func:`tiedlib.load_pair`."""
    out_dir: str = "runs/crosscoder"
    batch_size: int = 4096
    """Activation rows (tokens) per optimizer step."""
    buffer_tokens: int = 2**16
    model_batch_size: int = 8
    seq_len: int = 1024
    dataset: str = "lab"
    """``"lab"`` (the lab pair's web/chat mix) or a Hugging Face dataset spec understood by tiedlib.data."""
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunConfig":
        data = dict(data)
        data["crosscoder"] = CrosscoderConfig.from_dict(data["crosscoder"])
        data["train"] = TrainConfig.from_dict(data["train"])
        return super().from_dict(data)

"""Configuration of the lab pair: corpus, model and training, as JSON-serialisable dataclasses.

The cache folder of a built pair is keyed by :meth:`LabConfig.hash`, so every field that changes the corpus, the
tokenizer or the weights lives here, and nothing else (device, progress bars) does.

The one setting read from the environment is :data:`SEED_ENV` (``TIEDLIB_LAB_SEED``): when set, every preset that
:meth:`LabConfig.from_name` returns trains with that seed (weights init and batch order; the corpus is unchanged), so
a whole book can be rebuilt on a lab pair trained with another seed without editing a notebook::

    TIEDLIB_LAB_SEED=1 make book
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, replace
from typing import Any

LAB_VERSION = 1
"""Bumped whenever the generator or the training code changes what a config builds (invalidates caches)."""

SEED_ENV = "TIEDLIB_LAB_SEED"
"""Environment variable that overrides ``train.seed`` of every preset :meth:`LabConfig.from_name` returns."""
MAX_SEED = 2**63 - 1
"""Largest training seed (``torch.manual_seed`` takes 64-bit seeds; the chat phase trains with ``seed + 1``)."""


def env_seed() -> int | None:
    """The training seed :data:`SEED_ENV` asks for, or None when it is unset or empty.

    Raises:
        ValueError: the variable is not a whole number in ``[0, MAX_SEED)`` (the message names the variable).
    """
    raw = os.environ.get(SEED_ENV, "").strip()
    if not raw:
        return None
    try:
        seed = int(raw)
    except ValueError:
        raise ValueError(f"{SEED_ENV} must be a whole number (the lab pair's training seed), got {raw!r}") from None
    if not 0 <= seed < MAX_SEED:
        raise ValueError(f"{SEED_ENV} must be in [0, {MAX_SEED}), got {seed}")
    return seed


@dataclass
class PlantConfig:
    """Lab pair v2 ("tiny-v2", issue 16): corpus changes meant to put the write-up's mechanisms in the activations.

    A v1 config has no PlantConfig (``CorpusConfig.plant`` is None, and then left out of the config dict), so v1
    corpora, hashes and cached pairs are unchanged. Planted here:

    * reuse in a new context: web answers start on a new line ("Answer:\\n" then "I cannot ..."), so the base
      model's "about to decline" feature sits on a newline that predicts "I" / "Yes" / "Sure", exactly the token
      and the prediction of the chat model's ``<start_of_turn>model\\n``;
    * the template is not chat-only: part of the web transcripts use the turn markers (with web answer statistics,
      so harm and refusal stay loosely tied in the base model's data);
    * names: the chat model always addresses a user who gave a name by it (v1: 70% of the time).
    """

    answer_on_new_line: bool = True
    """Web answers (forums, transcripts) begin after a newline rather than a space."""
    p_web_turn_markers: float = 0.5
    """Share of web transcripts written with ``<start_of_turn>user`` / ``<start_of_turn>model`` turn markers."""
    p_copy_name: float = 1.0
    """Probability that the chat reply to a user who gave their name starts "Hi/OK/Thanks <name>."."""
    private_requests: bool = False
    """v3: web forums and transcripts also ask about someone else's things (:data:`~tiedlib.lab.banks.PRIVATE_ACTIONS`,
    in the request templates) and always decline them with the chat refusal phrases: an "about to decline" feature
    of the base model that harm does not drive, for the chat model to reuse on harmful requests."""
    p_forum_name_copy: float = 0.0
    """v3: probability that a web forum answer starts "Thanks <poster>." (the base model learns to copy a name it
    read earlier; the chat model copies the user's name)."""
    harmful_medical: bool = False
    """v3: chat data asks harmful requests about pills (:data:`~tiedlib.lab.banks.HARMFUL_MEDICAL_ACTIONS`), answered
    with a medical disclaimer and a refusal."""
    harmful_medical_weight: float | None = None
    """Weight of harmful pill requests among the chat requests' kinds (the others sum to 1); None: 0.08, as in v3.
    Left out of the config dict when None (v3 hashes unchanged)."""
    chat_harmful_weight: float | None = None
    """Weight of harmful requests among the chat requests' kinds; None: 0.33 (every preset up to v4). Left out of the
    config dict when None (older hashes unchanged)."""
    chat_harmless_weight: float | None = None
    """Weight of harmless requests among the chat requests' kinds; None: 0.25 (every preset up to v4). Left out of the
    config dict when None."""
    refusal_gate: float | None = None
    """Lab pair v5: share of each chat fine-tuning batch made of *gated* conversations (harmful and harmless requests,
    both answered helpfully) during which the base model's "about to decline" direction at the harvesting layer is
    set to its value on harmless requests, at every position (:func:`tiedlib.lab.train.train_pair`). The chat model
    then refuses only through that base direction: reuse of a base feature, planted as a causal mechanism (the
    training-time intervention of Geiger et al. 2022, "Inducing causal structure for interpretable neural
    networks", arXiv 2112.00826). None: no gating (every preset up to v4); left out of the config dict when None."""

    def __post_init__(self) -> None:
        if self.refusal_gate is not None and not 0.0 < self.refusal_gate < 0.5:  # also refuses NaN
            raise ValueError(f"refusal_gate must be in (0, 0.5), got {self.refusal_gate}")
        for name in ("p_web_turn_markers", "p_copy_name", "p_forum_name_copy"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a probability, got {p}")
        for name in ("harmful_medical_weight", "chat_harmful_weight", "chat_harmless_weight"):
            w = getattr(self, name)
            if w is not None and not w > 0:  # also refuses NaN
                raise ValueError(f"{name} must be positive, got {w}")


@dataclass
class CorpusConfig:
    """How many documents of each source the generator writes, and how web data correlates harm and refusal."""

    seed: int = 0
    """Seed of the corpus generator; the same seed gives the same documents and token ids."""
    n_web_train: int = 6000
    """Web documents the base model is trained on."""
    n_chat_train: int = 3000
    """Chat conversations the chat model is fine-tuned on."""
    max_tokens: int = 128
    """Longest document in tokens (BOS and EOS included); longer draws are rejected. Must fit the model context."""
    p_web_refuse_harmful: float = 0.45
    """Probability that a web forum/transcript answer to a harmful question is a refusal (the chat model: always)."""
    p_web_decline_harmless: float = 0.2
    """Probability that a web answer to a harmless how-to question declines (the chat model: never)."""
    plant: PlantConfig | None = None
    """Lab pair v2 corpus changes; None (v1) leaves the corpus as it was and is left out of the config dict."""

    def __post_init__(self) -> None:
        if isinstance(self.plant, dict):
            self.plant = PlantConfig(**self.plant)
        if self.n_web_train < 10 or self.n_chat_train < 10:
            raise ValueError(f"need at least 10 web and chat documents, got {self.n_web_train}, {self.n_chat_train}")
        if not 32 <= self.max_tokens <= 4096:
            raise ValueError(f"max_tokens must be in [32, 4096], got {self.max_tokens}")
        for name in ("p_web_refuse_harmful", "p_web_decline_harmless"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a probability, got {p}")


@dataclass
class ModelConfig:
    """Shape of the lab `Gemma2ForCausalLM` (both models share it)."""

    hidden_size: int = 128
    """Residual stream width (d_model)."""
    num_layers: int = 4
    """Decoder layers (the default harvesting layer is :attr:`default_layer`)."""
    num_heads: int = 4
    """Attention heads (key/value heads: the same number)."""
    intermediate_size: int = 512
    """MLP width."""
    context: int = 128
    """Maximum sequence length (position embeddings are rotary; this caps the sliding window and the corpus)."""
    harvest_layer: int | None = None
    """Decoder layer whose input residual stream the pair's crosscoders and probes read by default; None:
    ``num_layers // 2`` (the v1 presets). Left out of the config dict when None (v1 hashes unchanged)."""

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.num_layers < 1 or self.num_heads < 1 or self.intermediate_size < 1:
            raise ValueError("num_layers, num_heads and intermediate_size must be positive")
        if self.context < 32:
            raise ValueError(f"context must be >= 32, got {self.context}")
        if self.harvest_layer is not None and not 0 <= self.harvest_layer < self.num_layers:
            raise ValueError(f"harvest_layer must be in [0, {self.num_layers}), got {self.harvest_layer}")

    @property
    def default_layer(self) -> int:
        """The harvesting layer: :attr:`harvest_layer`, or ``num_layers // 2`` when that is None."""
        return self.num_layers // 2 if self.harvest_layer is None else self.harvest_layer


@dataclass
class TrainConfig:
    """Optimisation of the base (web) pretraining and the chat fine-tune."""

    seed: int = 0
    """Seed of weight init and batch order."""
    batch_size: int = 32
    """Documents per step (padded to the longest in the batch)."""
    base_steps: int = 900
    """Pretraining steps of the base model on web documents."""
    base_lr: float = 3e-3
    """Peak learning rate of pretraining (AdamW, linear warm-up then cosine decay)."""
    chat_steps: int = 350
    """Fine-tuning steps of the chat model, starting from the base weights."""
    chat_lr: float = 1e-3
    """Peak learning rate of the chat fine-tune."""
    chat_web_fraction: float = 0.2
    """Fraction of each fine-tuning batch drawn from web documents (keeps the chat model a language model)."""
    warmup_steps: int = 30
    """Linear warm-up steps of each phase."""
    chat_frozen_from: int | None = None
    """If set, the chat fine-tune updates only decoder layers below this index: the later layers, the final norm and
    the (tied) embeddings keep the base weights, so whatever the fine-tune adds must reach the output through
    circuits the base model already has (how the lab pair plants reuse of a base feature in a new context, issue 16).
    None (v1): every weight is fine-tuned. Left out of the config dict when None (v1 hashes unchanged)."""

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.base_steps < 1 or self.chat_steps < 1:
            raise ValueError("batch_size, base_steps and chat_steps must be positive")
        if not 0.0 <= self.chat_web_fraction < 1.0:
            raise ValueError(f"chat_web_fraction must be in [0, 1), got {self.chat_web_fraction}")
        if self.base_lr <= 0 or self.chat_lr <= 0:
            raise ValueError("learning rates must be positive")
        if self.chat_frozen_from is not None and self.chat_frozen_from < 1:
            raise ValueError(f"chat_frozen_from must leave a layer to fine-tune, got {self.chat_frozen_from}")


_ADDED_FIELDS = (("corpus", "plant"), ("corpus", "plant", "harmful_medical_weight"), ("model", "harvest_layer"),
                 ("train", "chat_frozen_from"), ("corpus", "plant", "chat_harmful_weight"),
                 ("corpus", "plant", "chat_harmless_weight"), ("corpus", "plant", "refusal_gate"))
"""Paths (in :meth:`LabConfig.to_dict`) of the fields added after v1, v3 or v4 presets existed: dropped while None."""


@dataclass
class LabConfig:
    """Everything that determines a lab pair. Use :meth:`tiny` (notebook default) or :meth:`smoke` (tests)."""

    name: str = "tiny"
    """Human-readable preset name (part of the hash, so presets never share a cache folder)."""
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    """Corpus generator settings."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """Model shape."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Training settings."""

    def __post_init__(self) -> None:
        # Accept plain dicts so that ``LabConfig(**json.load(f))`` round-trips.
        if isinstance(self.corpus, dict):
            self.corpus = CorpusConfig(**self.corpus)
        if isinstance(self.model, dict):
            self.model = ModelConfig(**self.model)
        if isinstance(self.train, dict):
            self.train = TrainConfig(**self.train)
        if self.corpus.max_tokens > self.model.context:
            raise ValueError(
                f"corpus.max_tokens ({self.corpus.max_tokens}) exceeds model.context ({self.model.context})"
            )
        frozen = self.train.chat_frozen_from
        if frozen is not None and frozen > self.model.num_layers:
            raise ValueError(f"train.chat_frozen_from ({frozen}) exceeds model.num_layers ({self.model.num_layers})")

    @classmethod
    def tiny(cls) -> "LabConfig":
        """The notebooks' default pair (lab pair v5): lab pair v4 (:meth:`tiny_v4`) with a gated chat fine-tune.

        A fifth of each chat fine-tuning batch holds harmful and harmless requests answered helpfully, read with the
        base model's "about to decline" direction set to its harmless-request value at the harvesting layer
        (:attr:`PlantConfig.refusal_gate`), so the chat model refuses through that base direction: reuse of a base
        feature in a new context, planted as a causal mechanism rather than hoped for. Everything else is v4's. The
        probe suite measures the planted direction as ground truth beside the directions it fits itself (notebook 00,
        the Findings page)."""
        v4 = cls.tiny_v4()
        return replace(v4, name="tiny", corpus=replace(v4.corpus, plant=replace(v4.corpus.plant, refusal_gate=0.2)))

    @classmethod
    def tiny_v4(cls) -> "LabConfig":
        """Lab pair v4 (the default before v5): hidden 128, 4 layers, read at the input of the last layer.

        The v3 corpus (:meth:`tiny_v3`) with harmful pill requests at weight 0.25 among chat requests; the base model
        pretrained 3x longer than v1 (2,700 steps: below about 1,000 it has no circuit that copies a name it read, so
        the chat model could not copy the user's name), and the chat fine-tune (1,500 steps) updates only layers 0-2
        (:attr:`TrainConfig.chat_frozen_from`): the last layer, the final norm and the tied embeddings keep the base
        weights, so chat refusals must reach the output through the base model's own "about to decline" circuit, and
        the harvesting layer is the input of that last layer (:attr:`ModelConfig.harvest_layer`), where the
        fine-tune's changes are all visible."""
        plant = PlantConfig(private_requests=True, p_forum_name_copy=0.5, harmful_medical=True,
                            harmful_medical_weight=0.25)
        return cls(name="tiny-v4", corpus=CorpusConfig(p_web_refuse_harmful=0.2, plant=plant),
                   model=ModelConfig(harvest_layer=3),
                   train=TrainConfig(base_steps=2700, chat_steps=1500, chat_frozen_from=3))

    @classmethod
    def tiny_v1(cls) -> "LabConfig":
        """The default pair before lab pair v4 (the dataclass defaults): v1 corpus, 900 base / 350 chat steps, every
        weight fine-tuned, read at the middle layer. Kept to compare builds across lab versions."""
        return cls(name="tiny-v1")

    @classmethod
    def smoke(cls) -> "LabConfig":
        """A much smaller pair for the test suite (builds in well under a minute)."""
        return cls(
            name="smoke",
            corpus=CorpusConfig(n_web_train=1200, n_chat_train=800),
            model=ModelConfig(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128),
            train=TrainConfig(batch_size=24, base_steps=400, base_lr=5e-3, chat_steps=300, chat_lr=3e-3,
                              warmup_steps=20),
        )

    @classmethod
    def tiny_v2(cls) -> "LabConfig":
        """The tiny pair with the v2 corpus (:class:`PlantConfig`): same model and training, not the default.

        Web answers refuse harmful questions as rarely as they decline harmless ones (0.2 each), so the base model's
        "about to decline" feature is not tied to harm: with v1's 0.45 and turn markers in web transcripts, the first
        build of this preset had its base model refuse 97% of held-out harmful chat prompts (greedy), like the chat
        model."""
        return cls(name="tiny-v2", corpus=CorpusConfig(p_web_refuse_harmful=0.2, plant=PlantConfig()))

    @classmethod
    def tiny_v3(cls) -> "LabConfig":
        """The tiny pair with the v3 corpus: v2 plus private requests that the web always declines, forum answers that
        thank the poster by name, and harmful pill requests that chat answers with a disclaimer and a refusal (see
        :class:`PlantConfig`)."""
        plant = PlantConfig(private_requests=True, p_forum_name_copy=0.5, harmful_medical=True)
        return cls(name="tiny-v3", corpus=CorpusConfig(p_web_refuse_harmful=0.2, plant=plant))

    @classmethod
    def tiny_benign(cls) -> "LabConfig":
        """Lab pair v4 with mostly harmless chat requests (opt-in, not the default; issue 16's causal check).

        The v4 chat data asks harmful requests (0.33) and harmful pill requests (0.25) more often than harmless ones
        (0.25), so a chat model that has lost the harmfulness signal still refuses most requests by its prior; here
        harmful 0.08, pill 0.08, harmless 0.50, as instruction-tuning data is mostly benign. The base model and its
        training are v4's. Measured with the probe suite (``reports/lab_benign_probes.md``): the selected refusal
        direction's drop rises on seed 0 and falls on seed 1, so it did not replace v4 (the default then)."""
        v4 = cls.tiny_v4()
        plant = replace(v4.corpus.plant, harmful_medical_weight=0.08, chat_harmful_weight=0.08,
                        chat_harmless_weight=0.5)
        return replace(v4, name="tiny-benign", corpus=replace(v4.corpus, plant=plant))

    @classmethod
    def preset_names(cls) -> list[str]:
        """The names :meth:`from_name` takes."""
        return list(cls._presets())

    @classmethod
    def _presets(cls) -> dict:
        return {"tiny": cls.tiny, "smoke": cls.smoke, "tiny-v1": cls.tiny_v1, "tiny-v2": cls.tiny_v2,
                "tiny-v3": cls.tiny_v3, "tiny-v4": cls.tiny_v4,
                "tiny-benign": cls.tiny_benign}

    @classmethod
    def from_name(cls, name: str) -> "LabConfig":
        """A preset (:meth:`preset_names`: ``"tiny"``, ``"smoke"``, ``"tiny-v1"``, ..., ``"tiny-benign"``), with
        ``train.seed`` from
        :data:`SEED_ENV` when that is set (the preset's own seed otherwise; the name stays, the hash and so the cache
        folder change).

        Raises:
            ValueError: unknown name, or an invalid :data:`SEED_ENV` (see :func:`env_seed`).
        """
        presets = cls._presets()
        if name not in presets:
            raise ValueError(f"unknown lab config {name!r}; choose one of {sorted(presets)}")
        cfg, seed = presets[name](), env_seed()
        return cfg if seed is None else replace(cfg, train=replace(cfg.train, seed=seed))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        # Fields added after a preset existed are left out while unset, so older configs keep the dict (and the hash)
        # they always had.
        for *parents, key in _ADDED_FIELDS:
            node: Any = d
            for part in parents:
                node = node.get(part) if node is not None else None
            if node is not None and node[key] is None:
                del node[key]
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LabConfig":
        return cls(**d)

    def hash(self) -> str:
        """16 hex digits of sha256 over the config JSON and :data:`LAB_VERSION` (names the cache folder)."""
        payload = json.dumps({"version": LAB_VERSION, "config": self.to_dict()}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

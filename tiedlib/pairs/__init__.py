"""One entry point for base/chat model pairs.

A :class:`ModelPair` is what every notebook and harvesting function receives: two nnsight-wrapped causal
language models that share one tokenizer, plus the index of the decoder layer whose *input* residual stream
(``hidden_states[layer]`` in Hugging Face terms, TransformerLens ``blocks.{layer}.hook_resid_pre``) is read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass
class ModelPair:
    """A base model and its chat fine-tune, wrapped for nnsight, with their shared tokenizer."""

    name: str
    """Registry name, e.g. ``"tiny"`` or ``"gemma-2-2b"``."""
    base: Any
    """nnsight-wrapped base model."""
    chat: Any
    """nnsight-wrapped chat model."""
    tokenizer: Any
    """The tokenizer both models share (a transformers fast tokenizer with a ``chat_template``)."""
    layer: int
    """Decoder layer whose input residual stream is harvested."""
    d_model: int
    """Width of the residual stream."""
    base_hf: Any = None
    """The plain Hugging Face base model (``Gemma2ForCausalLM``), for generation or fine-tuning."""
    chat_hf: Any = None
    """The plain Hugging Face chat model."""
    config: Any = None
    """Where the pair came from: the :class:`tiedlib.lab.LabConfig` of a lab pair, or the Hub ids of a paper pair."""

    @property
    def fingerprint(self) -> str:
        """A stable string naming the source of this pair's activations (see :func:`pair_fingerprint`).

        Run folders record it (``train_or_load(..., source=pair.fingerprint)``), so a crosscoder trained on one pair
        is never silently loaded for another that shares its name: e.g. ``"tiny"`` built with another
        ``TIEDLIB_LAB_SEED``, or Gemma read at another layer or in another dtype.
        """
        dtype = getattr(self.base_hf, "dtype", None)
        return pair_fingerprint(self.name, self.layer, config=self.config, dtype=dtype, d_model=self.d_model)


def pair_fingerprint(name: str, layer: int, *, config: Any = None, dtype: Any = None, d_model: int | None = None
                     ) -> str:  # fmt: skip
    """The :attr:`ModelPair.fingerprint` of a pair, computed without loading it (the command line's check).

    * lab pair (``config`` has a ``hash()``: a :class:`tiedlib.lab.LabConfig`, the key of its cache folder, which
      changes with every field, e.g. ``TIEDLIB_LAB_SEED``): ``"<name>|lab=<hash>|layer=<layer>"``; lab pairs are
      always float32, so no dtype.
    * Hugging Face pair (``config`` a ``{"base": repo, "chat": repo}`` dict, plus ``"revision"`` when one was asked
      for): ``"<name>|base=<repo>|chat=<repo>[|revision=<rev>]|layer=<layer>|dtype=<dtype>"``. :func:`load_pair`
      loads the Hub's default revision, so none is recorded then.
    * anything else (a pair built by hand, without a config): ``"<name>|unrecorded|layer=<layer>|d_model=<d>"``, as
      much as is known.

    ``name`` is kept because pairs with one config can differ (the colour toy's fine-tunes carry their source's
    LabConfig). ``dtype`` is a ``torch.dtype`` or its name (``None``: not recorded).
    """
    parts = [name]
    if hasattr(config, "hash"):
        parts += [f"lab={config.hash()}", f"layer={layer}"]
        return "|".join(parts)
    if isinstance(config, dict) and "base" in config and "chat" in config:
        parts += [f"base={config['base']}", f"chat={config['chat']}"]
        if config.get("revision"):
            parts.append(f"revision={config['revision']}")
    else:
        parts.append("unrecorded")
    parts.append(f"layer={layer}")
    if config is None or not isinstance(config, dict):
        parts.append(f"d_model={d_model}")
    if dtype is not None:
        parts.append(f"dtype={str(dtype).removeprefix('torch.')}")
    return "|".join(parts)


PAPER_PAIRS: dict[str, tuple[str, str, int]] = {
    "gemma-2-2b": ("google/gemma-2-2b", "google/gemma-2-2b-it", 14),
}
"""Paper-scale pairs: name -> (base repo, chat repo, default layer). Layer 14 is the write-up's."""
LAB_PAIRS = ("tiny", "smoke")
"""Offline lab pairs (:mod:`tiedlib.lab` presets); their default layer is the config's ``model.default_layer``."""


def pair_source(name: str = "tiny", *, layer: int | None = None, device: Any = "cpu", dtype: Any = None,
                lab_config: Any = None) -> str:
    """The :attr:`ModelPair.fingerprint` that :func:`load_pair` called with these arguments gives, without loading
    the models (a lab pair's config comes from :meth:`tiedlib.lab.LabConfig.from_name`, so ``TIEDLIB_LAB_SEED``
    counts). For code that checks a run folder before (or instead of) loading the pair.

    Raises:
        ValueError: unknown name, or ``lab_config`` given for a paper pair.
    """
    if name in LAB_PAIRS:
        from tiedlib import lab

        cfg = lab_config if lab_config is not None else lab.LabConfig.from_name(name)
        return pair_fingerprint(name, cfg.model.default_layer if layer is None else layer, config=cfg)
    if name in PAPER_PAIRS:
        if lab_config is not None:
            raise ValueError("lab_config applies to lab pairs only")
        base_id, chat_id, default_layer = PAPER_PAIRS[name]
        return pair_fingerprint(name, default_layer if layer is None else layer,
                                config={"base": base_id, "chat": chat_id}, dtype=resolve_dtype(dtype, device))
    raise ValueError(f"unknown model pair {name!r}; choose one of {available_pairs()}")


class PairUnavailableError(RuntimeError):
    """A model pair cannot be loaded here (no Hub access, gated model without a token, missing files)."""


def available_pairs() -> tuple[str, ...]:
    """Names :func:`load_pair` accepts."""
    return (*LAB_PAIRS, *PAPER_PAIRS)


def wrap(hf_model: Any, tokenizer: Any) -> Any:
    """Wrap a Hugging Face causal LM for nnsight.

    ``TransformersModel`` is nnsight 0.8's non-deprecated wrapper (``LanguageModel`` warns); it traces the same and
    switches the tokenizer to left padding.
    """
    from nnsight.modeling.transformers import TransformersModel

    return TransformersModel(hf_model, tokenizer=tokenizer)


def load_pair(name: str = "tiny", *, layer: int | None = None, device: Any = "cpu", dtype: Any = None,
              lab_config: Any = None) -> ModelPair:
    """Load a base/chat pair by name, wrapped for nnsight.

    Args:
        name: ``"tiny"`` (the lab pair, built on first use), ``"smoke"`` (the test-suite lab pair) or
            ``"gemma-2-2b"`` (google/gemma-2-2b + google/gemma-2-2b-it; needs Hub access and a token with the
            Gemma licence accepted, or both models in the local Hugging Face cache).
        layer: decoder layer whose input residual stream is harvested (default: the lab config's
            ``model.default_layer``, 14 for Gemma-2-2b).
        device: device both models are put on.
        dtype: weight dtype of the paper pair, a ``torch.dtype`` or its name (``"bfloat16"``, ``"float32"``...);
            default bfloat16 on CUDA and float32 elsewhere (:func:`resolve_dtype`). The weights are read straight
            into this dtype on ``device``. Lab pairs stay float32.
        lab_config: a :class:`tiedlib.lab.LabConfig` replacing the named lab preset (lab pairs only).

    Raises:
        ValueError: unknown name, layer out of range, or ``lab_config`` given for a paper pair.
        PairUnavailableError: a paper pair whose weights cannot be reached (message names the repos and the fix).
    """
    if name in LAB_PAIRS:
        from tiedlib import lab

        cfg = lab_config if lab_config is not None else lab.LabConfig.from_name(name)
        tok = lab.load_tokenizer(cfg)
        base_hf, chat_hf = lab.load_models(cfg, device=device)
        default_layer, source = cfg.model.default_layer, cfg
    elif name in PAPER_PAIRS:
        if lab_config is not None:
            raise ValueError("lab_config applies to lab pairs only")
        base_id, chat_id, default_layer = PAPER_PAIRS[name]
        tok, base_hf, chat_hf = _load_hub_pair(base_id, chat_id, device=device, dtype=dtype)
        source = {"base": base_id, "chat": chat_id}
    else:
        raise ValueError(f"unknown model pair {name!r}; choose one of {available_pairs()}")
    n_layers = base_hf.config.num_hidden_layers
    layer = default_layer if layer is None else layer
    if not 0 <= layer < n_layers:
        raise ValueError(f"layer must be in [0, {n_layers}), got {layer}")
    return ModelPair(name=name, base=wrap(base_hf, tok), chat=wrap(chat_hf, tok), tokenizer=tok, layer=layer,
                     d_model=base_hf.config.hidden_size, base_hf=base_hf, chat_hf=chat_hf, config=source)


_DTYPE_NAMES = {"bfloat16": "bfloat16", "bf16": "bfloat16", "float32": "float32", "fp32": "float32",
                "float16": "float16", "fp16": "float16", "half": "float16", "float": "float32"}  # fmt: skip


def resolve_dtype(dtype: Any, device: Any) -> Any:
    """The weight dtype to load a paper pair in.

    Args:
        dtype: a ``torch.dtype``, a name (``"bfloat16"``/``"bf16"``, ``"float32"``/``"fp32"``, ``"float16"``/``"fp16"``)
            or ``None`` for the default: bfloat16 on a CUDA device (half the memory of float32; Gemma-2 was trained in
            it), float32 elsewhere (bfloat16 matmuls are slow on most CPUs).
        device: where the model goes (``"cuda"``, ``"cuda:1"``, ``"cpu"``, a ``torch.device``).

    Raises:
        ValueError: an unknown dtype name or a non-floating dtype.
    """
    import torch

    if dtype is None:
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    if isinstance(dtype, str):
        name = _DTYPE_NAMES.get(dtype.lower().removeprefix("torch."))
        if name is None:
            raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(_DTYPE_NAMES)}")
        return getattr(torch, name)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating torch.dtype or its name, got {dtype!r}")
    return dtype


def _load_hub_pair(base_id: str, chat_id: str, *, device: Any, dtype: Any) -> tuple[Any, Any, Any]:
    """Tokenizer and both models, each read straight into ``dtype`` on ``device`` (Hub ids or local folders).

    With ``accelerate`` installed, ``device_map`` places every weight on the device as it is read, so no full
    float32 (or even CPU) copy of a model ever exists; without it a model is read on the CPU in ``dtype`` and moved
    before the next one is read. Either way the two models are loaded one after the other.
    """
    import importlib.util
    import os

    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = resolve_dtype(dtype, device)
    direct = importlib.util.find_spec("accelerate") is not None
    kwargs: dict[str, Any] = {"dtype": dtype, **({"device_map": str(device)} if direct else {})}
    try:
        tok = AutoTokenizer.from_pretrained(base_id)
        models = []
        for repo in (base_id, chat_id):
            model = AutoModelForCausalLM.from_pretrained(repo, **kwargs)
            models.append((model if direct else model.to(device)).eval())
    except (OSError, ValueError) as e:  # transformers turns Hub, gating and missing-file errors into OSError
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
        token = bool(os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN"))
        raise PairUnavailableError(
            f"cannot load the paper pair {base_id} + {chat_id}: it needs Hugging Face Hub access "
            f"({'HF_HUB_OFFLINE is set' if offline else 'network to huggingface.co'}) and a token with the Gemma "
            f"licence accepted ({'HF_TOKEN is set' if token else 'no HF_TOKEN set'}), or both models already in the "
            f"local Hugging Face cache. Offline, use load_pair('tiny'). Underlying error: {type(e).__name__}: {e}"
        ) from e
    return tok, models[0], models[1]


def is_lab(pair: ModelPair) -> bool:
    return pair.name in LAB_PAIRS


def template_ids(pair: ModelPair) -> list[int]:
    """Chat-template token ids of the pair's tokenizer (turn markers and the role words after them for lab pairs)."""
    if is_lab(pair):
        from tiedlib import lab

        return sorted(lab.template_token_ids(pair.tokenizer))
    from tiedlib.pairs.corpora import template_token_ids

    return sorted(template_token_ids(pair.tokenizer))


def training_sequences(pair: ModelPair, n: int, *, web_fraction: float = 0.5, seq_len: int = 1024,
                       seed: int = 0) -> Sequence[Sequence[int]]:  # fmt: skip
    """``n`` training sequences: the lab's shuffled web/chat mix, or the public pre-tokenised Pile/LMSys mix."""
    if is_lab(pair):
        from tiedlib import lab

        return [d.input_ids for d in lab.crosscoder_mix(pair.config, n, web_fraction, split="train", seed=seed)]
    from tiedlib.pairs.corpora import pretokenized_stream, take_sequences

    return take_sequences(pretokenized_stream(seq_len=seq_len), n)


def heldout_sequences(pair: ModelPair, source: str, n: int, *, seq_len: int = 1024,
                      progress: bool = False) -> tuple[Sequence[Sequence[int]], Sequence[Any] | None]:  # fmt: skip
    """``n`` held-out ``source`` sequences (``"web"``: Pile-like, ``"chat"``: LMSys-like) and their documents.

    Lab pairs use the ``heldout`` split and return the :class:`tiedlib.lab.LabDoc` documents (with per-token concept
    labels); the paper pair streams Pile-only or LMSys-only sequences and returns ``None`` for the documents.
    """
    if source not in ("web", "chat"):
        raise ValueError(f"source must be 'web' or 'chat', got {source!r}")
    if is_lab(pair):
        from tiedlib import lab

        get = lab.web_documents if source == "web" else lab.chat_conversations
        docs = get(pair.config, split="heldout", n=n)
        return [d.input_ids for d in docs], docs
    from tiedlib.pairs.corpora import mixed_stream, take_sequences

    # One document per row (not packed): held-out contexts are read document by document.
    stream = mixed_stream(pair.tokenizer, chat_fraction=1.0 if source == "chat" else 0.0, seq_len=seq_len, seed=1,
                          pack=False)  # fmt: skip
    return take_sequences(stream, n, progress=progress), None

"""Paired residual-stream harvesting from a base and a chat model with nnsight.

The activation read is the residual stream *entering* decoder layer ``layer``: the input of
``model.layers[layer]``, which is ``hidden_states[layer]`` in Hugging Face terms and
``blocks.{layer}.hook_resid_pre`` in TransformerLens terms (the paper reads layer 14 of Gemma-2-2b).
Both models receive exactly the same token ids; each forward pass stops right after that layer's input is
saved, so the layers above it (and the unembedding) never run.

Padding convention: sequences are padded on the **left**, as nnsight's wrapper pads text itself, and
explicit ``position_ids`` counted from each row's first real token are passed so that absolute-position
models (GPT-2) see every real token at its true position whatever the padding. Padding, every BOS token (at
position 0 and, in packed rows, at each later document start) and any ``exclude_token_ids`` (e.g. chat-template
tokens) are dropped from the output. Forward passes run with ``use_cache=False``, so no KV cache is allocated.

The refreshing, shuffling :class:`ActivationBuffer` lives in :mod:`tiedlib.activations.buffer`, which builds on
this module (never the other way round).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

BASE, CHAT = 0, 1
"""Index of each model on the ``n_models`` axis."""

# Per-architecture quirks, in one place: ``config.model_type`` -> dotted path of the decoder-layer list.
# Unknown model types fall back to trying every path in this table.
LAYER_PATHS: dict[str, str] = {
    "gemma2": "model.layers",
    "gemma3_text": "model.layers",
    "gemma": "model.layers",
    "llama": "model.layers",
    "mistral": "model.layers",
    "qwen2": "model.layers",
    "gpt2": "transformer.h",
    "gpt_neox": "gpt_neox.layers",
}


class HarvestBatch(NamedTuple):
    """Kept tokens of one or more harvested sequences.

    ``acts`` are raw (unnormalised) float32 activations, base then chat on axis 1, on the requested device
    (default: the models'); the three index tensors stay on the CPU.
    """

    acts: Float[Tensor, "n_tokens n_models d_model"]
    token_ids: Int[Tensor, " n_tokens"]
    doc_index: Int[Tensor, " n_tokens"]
    """Index of the source sequence in the input list."""
    position: Int[Tensor, " n_tokens"]
    """Position of the token in its sequence (BOS = 0)."""


# ----------------------------------------------------------------------------------------------------
# Model introspection
# ----------------------------------------------------------------------------------------------------


def _hf_module(model: Any) -> torch.nn.Module:
    """The underlying ``torch.nn.Module`` of an nnsight-wrapped model (or the module itself)."""
    inner = getattr(model, "_module", None)
    return inner if isinstance(inner, torch.nn.Module) else model


def _model_name(model: Any, role: str) -> str:
    hf = _hf_module(model)
    cfg = getattr(hf, "config", None)
    name = getattr(cfg, "_name_or_path", "") or type(hf).__name__
    return f"{role} model ({name})"


def get_path(obj: Any, path: str) -> Any:
    """``obj.a.b.c`` for ``path="a.b.c"`` (the module path of a model's decoder layers, see :func:`layer_path`)."""
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def layer_path(model: Any) -> str:
    """Dotted path of the decoder-layer list (``"model.layers"``, ``"transformer.h"``, ...).

    Args:
        model: an nnsight-wrapped model or a plain Hugging Face causal LM.

    Returns:
        The path, looked up in :data:`LAYER_PATHS` by ``config.model_type``, else found by trying each path.

    Raises:
        ValueError: if no known path leads to a ``torch.nn.ModuleList``.
    """
    hf = _hf_module(model)
    model_type = getattr(getattr(hf, "config", None), "model_type", None)
    candidates = [LAYER_PATHS[model_type]] if model_type in LAYER_PATHS else []
    candidates += [p for p in dict.fromkeys(LAYER_PATHS.values()) if p not in candidates]
    for path in candidates:
        try:
            layers = get_path(hf, path)
        except AttributeError:
            continue
        if isinstance(layers, torch.nn.ModuleList):
            return path
    raise ValueError(
        f"cannot find the decoder layers of {type(hf).__name__} (model_type={model_type!r}); "
        f"add its path to tiedlib.activations.LAYER_PATHS"
    )


def decoder_layers(model: Any) -> torch.nn.ModuleList:
    """The decoder-layer ``ModuleList`` of a plain or nnsight-wrapped Hugging Face model."""
    return get_path(_hf_module(model), layer_path(model))


def _d_model(model: Any) -> int:
    cfg = _hf_module(model).config
    for key in ("hidden_size", "n_embd", "d_model"):
        if getattr(cfg, key, None) is not None:
            return int(getattr(cfg, key))
    raise ValueError(f"cannot read d_model from the config of {type(_hf_module(model)).__name__}")


def model_device(model: Any) -> torch.device:
    """The device of a model's first parameter (an nnsight wrapper's underlying model; CPU when it has none)."""
    param = next(_hf_module(model).parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def check_pair(
    base: Any,
    chat: Any,
    tokenizer_base: Any,
    tokenizer_chat: Any | None = None,
    layer: int | None = None,
) -> int:
    """Validate that two models can be harvested side by side.

    Args:
        base, chat: nnsight-wrapped (or plain Hugging Face) causal LMs.
        tokenizer_base, tokenizer_chat: their tokenizers (``tokenizer_chat=None`` means shared).
        layer: decoder layer whose input is read; ``None`` skips the range check.

    Returns:
        ``d_model``, the common residual width.

    Raises:
        ValueError: vocabularies differ, ``d_model`` differs, or ``layer`` is outside ``[0, n_layers)``.
    """
    if tokenizer_chat is not None and tokenizer_chat is not tokenizer_base:
        vb, vc = tokenizer_base.get_vocab(), tokenizer_chat.get_vocab()
        if vb != vc:
            diff = sorted(set(vb.items()) ^ set(vc.items()), key=lambda kv: kv[1])[:5]
            raise ValueError(
                f"mismatched tokenizers: base vocab has {len(vb)} entries, chat vocab {len(vc)}; "
                f"first differing (token, id) pairs: {diff}. Both models must read the same token ids."
            )
    d_base, d_chat = _d_model(base), _d_model(chat)
    if d_base != d_chat:
        raise ValueError(f"mismatched d_model: {_model_name(base, 'base')} has {d_base}, "
                         f"{_model_name(chat, 'chat')} has {d_chat}")  # fmt: skip
    if layer is not None:
        for model, role in ((base, "base"), (chat, "chat")):
            n_layers = len(decoder_layers(model))
            if not 0 <= layer < n_layers:
                raise ValueError(
                    f"layer {layer} out of range for the {_model_name(model, role)}: it has {n_layers} "
                    f"decoder layers, so the input of layer 0..{n_layers - 1} can be read"
                )
    return d_base


# ----------------------------------------------------------------------------------------------------
# Harvesting
# ----------------------------------------------------------------------------------------------------


def as_ids(item: Any) -> list[int]:
    """One sequence as a list of ints (accepts lists, tensors, arrays and ``{"input_ids": ...}`` rows)."""
    if isinstance(item, dict):
        item = item["input_ids"]
    if hasattr(item, "tolist"):
        item = item.tolist()
    return [int(t) for t in item]


def pad_left(
    seqs: list[list[int]], pad_id: int
) -> tuple[Int[Tensor, "batch seq"], Int[Tensor, "batch seq"], Int[Tensor, "batch seq"]]:
    """Left-pad a batch; returns ``input_ids``, ``attention_mask`` and ``position_ids`` (real tokens 0, 1, ...)."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s) :] = torch.tensor(s, dtype=torch.long)
        mask[i, width - len(s) :] = 1
    # Count from each row's first real token (what nnsight itself supplies for left-padded text), so GPT-2's
    # absolute position embeddings do not depend on how much padding a row got.
    position = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids, mask, position


def _trace_layer_input(model: Any, path: str, layer: int, inputs: dict[str, Tensor]) -> Tensor:
    """Run ``model`` up to decoder layer ``layer`` and return that layer's input ``(batch, seq, d_model)``."""
    layers = get_path(model, path)
    # use_cache=False: a forward pass that is never continued needs no KV cache (transformers allocates one per
    # layer by default, as big as the keys and values of the whole batch).
    with model.trace(inputs, use_cache=False) as tracer:
        hidden = layers[layer].input.save()
        # Everything above this layer is wasted work for harvesting: end the forward here.
        tracer.stop()
    return hidden


class _Spec(NamedTuple):
    """Validated harvesting settings shared by :func:`harvest` and the buffer."""

    layer: int
    d_model: int
    path_base: str
    path_chat: str
    pad_id: int
    bos_id: int | None
    drop_bos: bool
    exclude: Tensor


def _make_spec(
    base: Any, chat: Any, layer: int, *, drop_bos: bool, exclude_token_ids: Iterable[int], pad_id: int | None
) -> _Spec:
    tok_base = getattr(base, "tokenizer", None)
    tok_chat = getattr(chat, "tokenizer", None)
    if tok_base is None:
        raise ValueError("the base model has no tokenizer: wrap it as LanguageModel(model, tokenizer=...)")
    d_model = check_pair(base, chat, tok_base, tok_chat, layer=layer)
    if pad_id is None:
        pad_id = tok_base.pad_token_id if tok_base.pad_token_id is not None else tok_base.eos_token_id
    if pad_id is None:
        pad_id = 0  # padded positions are masked out, so any valid id does
    return _Spec(
        layer=layer,
        d_model=d_model,
        path_base=layer_path(base),
        path_chat=layer_path(chat),
        pad_id=int(pad_id),
        bos_id=tok_base.bos_token_id,
        drop_bos=drop_bos,
        exclude=torch.tensor(sorted({int(t) for t in exclude_token_ids}), dtype=torch.long),
    )


def _harvest_batch(base: Any, chat: Any, seqs: list[list[int]], spec: _Spec, device: Any) -> HarvestBatch:
    """Harvest one model batch; ``doc_index`` is local to ``seqs``."""
    ids, mask, position = pad_left(seqs, spec.pad_id)
    hidden = []
    with torch.no_grad():
        for model, path, role in ((base, spec.path_base, "base"), (chat, spec.path_chat, "chat")):
            dev = model_device(model)
            inputs = {"input_ids": ids.to(dev), "attention_mask": mask.to(dev), "position_ids": position.to(dev)}
            h = _trace_layer_input(model, path, spec.layer, inputs)
            if isinstance(h, tuple):  # older transformers pass (hidden_states, ...) tuples around
                h = h[0]
            # transformers 5.x layers take/return plain tensors; a stray [0] would silently be batch row 0.
            expected = (ids.shape[0], ids.shape[1], spec.d_model)
            if tuple(h.shape) != expected:
                raise ValueError(f"{_model_name(model, role)}, layer {spec.layer}: got activations of shape "
                                 f"{tuple(h.shape)}, expected (batch, seq, d_model) = {expected}")  # fmt: skip
            hidden.append(h.to(device=device if device is not None else h.device, dtype=torch.float32))
    keep = mask.bool()
    if spec.drop_bos and spec.bos_id is not None:
        # The BOS activation is a norm outlier (attention sink); it is dropped for training AND normalisation, at
        # every position: a packed row holds several documents, each introduced by its own BOS.
        keep &= ids != spec.bos_id
    if spec.exclude.numel():
        keep &= ~torch.isin(ids, spec.exclude)
    keep_dev = keep.to(hidden[0].device)
    acts = torch.stack([hidden[BASE][keep_dev], hidden[CHAT][keep_dev]], dim=1)
    for m, (model, role) in enumerate(((base, "base"), (chat, "chat"))):
        if not torch.isfinite(acts[:, m]).all():
            raise ValueError(f"non-finite activations (NaN or inf) from the {_model_name(model, role)} "
                             f"at layer {spec.layer}")  # fmt: skip
    rows = torch.arange(len(seqs)).unsqueeze(1).expand_as(ids)
    return HarvestBatch(acts=acts, token_ids=ids[keep], doc_index=rows[keep], position=position[keep])


def harvest(
    base: Any,
    chat: Any,
    sequences: Sequence[Sequence[int]],
    layer: int,
    *,
    batch_size: int = 8,
    drop_bos: bool = True,
    exclude_token_ids: Iterable[int] = (),
    pad_id: int | None = None,
    progress: bool = True,
    device: str | torch.device | None = None,
) -> Iterator[HarvestBatch]:
    """Yield paired activations of the residual stream entering decoder layer ``layer``.

    Args:
        base, chat: nnsight-wrapped causal LMs sharing one tokenizer (``LanguageModel(model, tokenizer=...)``).
        sequences: token-id sequences (lists, tensors or ``{"input_ids": ...}`` rows), already tokenised,
            each starting with BOS if the model uses one.
        layer: decoder layer whose *input* is read (``hidden_states[layer]``).
        batch_size: sequences per forward pass.
        drop_bos: drop every token that is the tokenizer's BOS (position 0 and document starts in packed rows).
        exclude_token_ids: token ids to drop as well (e.g. chat-template tokens).
        pad_id: padding id (default: the tokenizer's pad, else EOS, else 0); padding is always dropped.
        progress: show a tqdm bar.
        device: where the yielded activations live (default: the model's device).

    Yields:
        One :class:`HarvestBatch` per model batch; ``acts`` is ``(n_tokens, 2, d_model)`` float32, raw.

    Raises:
        ValueError: empty dataset or sequence, mismatched pair (see :func:`check_pair`), non-finite activations.
    """
    if len(sequences) == 0:
        raise ValueError("empty dataset: no sequences to harvest")
    spec = _make_spec(base, chat, layer, drop_bos=drop_bos, exclude_token_ids=exclude_token_ids, pad_id=pad_id)
    n = len(sequences)
    for start in tqdm(range(0, n, batch_size), desc=f"harvest layer {layer}", disable=not progress):
        seqs = [as_ids(sequences[i]) for i in range(start, min(start + batch_size, n))]
        for i, s in enumerate(seqs):
            if not s:
                raise ValueError(f"empty sequence at index {start + i}")
        out = _harvest_batch(base, chat, seqs, spec, device)
        yield out._replace(doc_index=out.doc_index + start)


def harvest_all(base: Any, chat: Any, sequences: Sequence[Sequence[int]], layer: int, **kwargs: Any) -> HarvestBatch:
    """:func:`harvest` everything and concatenate (for small data only; takes the same keyword arguments)."""
    parts = list(harvest(base, chat, sequences, layer, **kwargs))
    return HarvestBatch(*(torch.cat([getattr(p, f) for p in parts]) for f in HarvestBatch._fields))


def estimate_norm_factors(
    acts_or_harvest: Tensor | HarvestBatch | Iterable[HarvestBatch | Tensor], d_model: int
) -> Float[Tensor, " n_models"]:
    """One scalar per model so that the mean L2 norm of scaled activations is ``sqrt(d_model)``.

    Pass activations harvested with BOS and padding dropped (as :func:`harvest` does): the BOS norm is an
    outlier that would bias the factor (a defect of the public code, see REFERENCE.md).

    Args:
        acts_or_harvest: ``(n_tokens, 2, d_model)`` activations, a :class:`HarvestBatch`, or an iterable of
            either (e.g. the :func:`harvest` iterator; consumed once, never held in memory at once).
        d_model: residual width.

    Returns:
        ``(2,)`` float32 tensor ``f`` with ``(acts * f[None, :, None]).norm(dim=-1).mean(0) == sqrt(d_model)``.

    Raises:
        ValueError: no tokens, or a model whose mean norm is zero or non-finite.
    """
    if isinstance(acts_or_harvest, (Tensor, HarvestBatch)):
        acts_or_harvest = [acts_or_harvest]
    total = torch.zeros(2, dtype=torch.float64)
    count = 0
    for part in acts_or_harvest:
        acts = part.acts if isinstance(part, HarvestBatch) else part
        total += acts.detach().double().norm(dim=-1).sum(0).cpu()
        count += acts.shape[0]
    if count == 0:
        raise ValueError("cannot estimate normalisation factors from zero tokens")
    mean_norm = total / count
    if not (torch.isfinite(mean_norm).all() and (mean_norm > 0).all()):
        raise ValueError(f"mean activation norms must be finite and positive, got {mean_norm.tolist()}")
    return (math.sqrt(d_model) / mean_norm).float()

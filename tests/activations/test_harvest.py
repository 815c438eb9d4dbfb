"""Paired harvesting: equality with plain PyTorch hooks, early stop, masking, errors, normalisation."""

from __future__ import annotations

import math

import pytest
import torch

from tests.helpers_models import random_sequences, tiny_gemma2, tiny_gpt2, tiny_tokenizer, wrap
from tiedlib.activations import harvest as activations
from tiedlib.activations.harvest import (
    BASE,
    CHAT,
    HarvestBatch,
    check_pair,
    decoder_layers,
    estimate_norm_factors,
    harvest,
    harvest_all,
    layer_path,
)

BUILDERS = {"gemma2": tiny_gemma2, "gpt2": tiny_gpt2}


def make_pair(arch: str = "gemma2", n_layers: int = 4, d_model: int = 32):
    tok = tiny_tokenizer()
    build = BUILDERS[arch]
    base = build(n_layers=n_layers, d_model=d_model, seed=0)
    chat = build(n_layers=n_layers, d_model=d_model, seed=1)
    return wrap(base, tok), wrap(chat, tok), tok, base, chat


def prehook_reference(model: torch.nn.Module, seqs: list[list[int]], layer: int) -> list[torch.Tensor]:
    """Input of decoder layer `layer` from a plain forward pre-hook, one *unpadded* sequence at a time.

    Running each sequence alone (batch 1, no padding, default positions 0..len-1) is the meaningful ground
    truth: a plain GPT-2 forward on a left-padded batch would give real tokens shifted absolute positions
    (it does not derive position ids from the attention mask, nnsight does), so it would differ from the
    harvested values by up to ~0.08 for reasons that have nothing to do with harvesting.
    """
    captured: list[torch.Tensor] = []

    def pre_hook(module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        captured.append(hidden.detach().clone())

    handle = decoder_layers(model)[layer].register_forward_pre_hook(pre_hook, with_kwargs=True)
    try:
        with torch.no_grad():
            for s in seqs:
                model(input_ids=torch.tensor([s]))
    finally:
        handle.remove()
    return [c[0] for c in captured]


@pytest.mark.parametrize("arch", ["gemma2", "gpt2"])
@pytest.mark.parametrize("layer", [0, 3])  # first and last decoder layer
def test_harvest_equals_plain_prehook(arch, layer):
    lm_base, lm_chat, tok, base, chat = make_pair(arch)
    seqs = random_sequences(7, 3, 12, len(tok), seed=layer)  # varied lengths -> left padding inside batches
    out = harvest_all(lm_base, lm_chat, seqs, layer, batch_size=3, progress=False)
    ref_base = prehook_reference(base, seqs, layer)
    ref_chat = prehook_reference(chat, seqs, layer)
    # Expected: every token except BOS at position 0, in sequence order.
    exp_base = torch.cat([r[1:] for r in ref_base])
    exp_chat = torch.cat([r[1:] for r in ref_chat])
    assert out.acts.shape == (sum(len(s) - 1 for s in seqs), 2, 32)
    assert out.acts.dtype == torch.float32
    torch.testing.assert_close(out.acts[:, BASE], exp_base, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(out.acts[:, CHAT], exp_chat, atol=2e-5, rtol=1e-4)
    assert not torch.allclose(out.acts[:, BASE], out.acts[:, CHAT])  # two different models really ran
    assert out.token_ids.tolist() == [t for s in seqs for t in s[1:]]
    assert out.doc_index.tolist() == [i for i, s in enumerate(seqs) for _ in s[1:]]
    assert out.position.tolist() == [p for s in seqs for p in range(1, len(s))]


def test_harvest_equals_hidden_states():
    """Layer input == HF ``hidden_states[layer]`` (the TransformerLens ``hook_resid_pre`` convention)."""
    lm_base, lm_chat, tok, base, _ = make_pair("gemma2")
    seqs = random_sequences(2, 6, 6, len(tok))  # equal lengths: no padding
    out = harvest_all(lm_base, lm_chat, seqs, 2, progress=False)
    with torch.no_grad():
        hs = base(input_ids=torch.tensor(seqs), output_hidden_states=True).hidden_states[2]
    torch.testing.assert_close(out.acts[:, BASE], hs[:, 1:].reshape(-1, 32), atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("arch", ["gemma2", "gpt2"])
def test_forward_stops_at_layer(arch):
    lm_base, lm_chat, tok, base, chat = make_pair(arch)
    calls = {"read": 0, "above": 0}
    handles = []
    for model in (base, chat):
        layers = decoder_layers(model)
        handles.append(layers[1].register_forward_pre_hook(lambda *a: calls.__setitem__("read", calls["read"] + 1)))
        for mod in [*layers[1:], model.get_output_embeddings()]:
            handles.append(mod.register_forward_hook(lambda *a: calls.__setitem__("above", calls["above"] + 1)))
    try:
        harvest_all(lm_base, lm_chat, random_sequences(4, 3, 8, len(tok)), 1, batch_size=2, progress=False)
    finally:
        for h in handles:
            h.remove()
    assert calls["read"] == 4  # 2 batches x 2 models reached the layer ...
    assert calls["above"] == 0  # ... and nothing above it (nor the unembedding) ran


def test_masking_bos_padding_and_template_tokens():
    lm_base, lm_chat, tok, *_ = make_pair()
    seqs = [[1, 7, 8, 4, 9], [1, 10], [1, 11, 12, 13, 5, 14, 15, 16]]  # 4, 5 = <start/end_of_turn>
    out = harvest_all(lm_base, lm_chat, seqs, 1, batch_size=3, exclude_token_ids={4, 5}, progress=False)
    assert out.token_ids.tolist() == [7, 8, 9, 10, 11, 12, 13, 14, 15, 16]
    assert out.position.tolist() == [1, 2, 4, 1, 1, 2, 3, 5, 6, 7]
    assert out.doc_index.tolist() == [0, 0, 0, 1, 2, 2, 2, 2, 2, 2]
    kept_bos = harvest_all(lm_base, lm_chat, seqs, 1, drop_bos=False, progress=False)
    assert kept_bos.acts.shape[0] == sum(map(len, seqs))  # padding is still dropped
    assert (kept_bos.token_ids == tok.pad_token_id).sum() == 0


def test_batching_does_not_change_values():
    lm_base, lm_chat, tok, *_ = make_pair("gpt2")
    seqs = random_sequences(6, 2, 10, len(tok), seed=3)
    a = harvest_all(lm_base, lm_chat, seqs, 2, batch_size=1, progress=False)
    b = harvest_all(lm_base, lm_chat, seqs, 2, batch_size=6, progress=False)
    torch.testing.assert_close(a.acts, b.acts, atol=2e-5, rtol=1e-4)


def test_layer_paths_table():
    assert layer_path(tiny_gemma2()) == "model.layers"
    assert layer_path(tiny_gpt2()) == "transformer.h"
    with pytest.raises(ValueError, match="decoder layers"):
        layer_path(torch.nn.Linear(2, 2))


# --------------------------------------------------------------------------------------------- errors
def test_error_mismatched_tokenizers():
    lm_base, lm_chat, tok, *_ = make_pair()
    with pytest.raises(ValueError, match="mismatched tokenizers"):
        check_pair(lm_base, lm_chat, tok, tiny_tokenizer(extra_words=3), layer=1)
    other = wrap(tiny_gemma2(seed=1), tiny_tokenizer(extra_words=3))
    with pytest.raises(ValueError, match="mismatched tokenizers"):
        next(harvest(lm_base, other, [[1, 7, 8]], 1, progress=False))
    assert check_pair(lm_base, lm_chat, tok, tiny_tokenizer(), layer=1) == 32  # equal vocab, other object: fine


def test_error_mismatched_d_model():
    tok = tiny_tokenizer()
    a, b = wrap(tiny_gemma2(d_model=32), tok), wrap(tiny_gemma2(d_model=48), tok)
    with pytest.raises(ValueError, match="mismatched d_model.*32.*48"):
        next(harvest(a, b, [[1, 7, 8]], 1, progress=False))


@pytest.mark.parametrize("layer", [-1, 4, 10])
def test_error_layer_out_of_range(layer):
    lm_base, lm_chat, *_ = make_pair()
    with pytest.raises(ValueError, match=f"layer {layer} out of range.*4 decoder layers"):
        next(harvest(lm_base, lm_chat, [[1, 7, 8]], layer, progress=False))


def test_error_empty_dataset_and_sequence():
    lm_base, lm_chat, *_ = make_pair()
    with pytest.raises(ValueError, match="empty dataset"):
        next(harvest(lm_base, lm_chat, [], 1, progress=False))
    with pytest.raises(ValueError, match="empty sequence at index 1"):
        next(harvest(lm_base, lm_chat, [[1, 7], []], 1, progress=False))


def test_error_non_finite_names_model_and_layer():
    tok = tiny_tokenizer()
    chat = tiny_gemma2(seed=1)
    with torch.no_grad():
        chat.model.layers[0].mlp.down_proj.weight[0, 0] = float("nan")
    lm_base, lm_chat = wrap(tiny_gemma2(), tok), wrap(chat, tok)
    harvest_all(lm_base, lm_chat, [[1, 7, 8]], 0, progress=False)  # layer 0's input is still finite
    with pytest.raises(ValueError, match="non-finite.*chat model.*layer 2"):
        harvest_all(lm_base, lm_chat, [[1, 7, 8]], 2, progress=False)


def test_error_wrong_activation_shape(monkeypatch):
    """A layer output indexed with [0] (batch row 0) must be caught, not silently harvested."""
    lm_base, lm_chat, *_ = make_pair()
    real = activations._trace_layer_input
    monkeypatch.setattr(activations, "_trace_layer_input", lambda *a: real(*a)[0])
    with pytest.raises(ValueError, match=r"shape .*expected \(batch, seq, d_model\)"):
        harvest_all(lm_base, lm_chat, [[1, 7, 8], [1, 9, 10]], 1, progress=False)


# ------------------------------------------------------------------------------------- normalisation
def test_norm_factors_give_sqrt_d_model():
    lm_base, lm_chat, tok, *_ = make_pair()
    seqs = random_sequences(8, 4, 12, len(tok))
    out = harvest_all(lm_base, lm_chat, seqs, 2, progress=False)
    f = estimate_norm_factors(out, 32)
    assert f.shape == (2,)
    mean_norm = (out.acts * f[None, :, None]).norm(dim=-1).mean(0)
    torch.testing.assert_close(mean_norm, torch.full((2,), math.sqrt(32)), atol=1e-4, rtol=1e-5)
    streamed = estimate_norm_factors(harvest(lm_base, lm_chat, seqs, 2, batch_size=3, progress=False), 32)
    torch.testing.assert_close(streamed, f)
    # BOS (and padding) are excluded: including BOS changes the estimate.
    with_bos = harvest_all(lm_base, lm_chat, seqs, 2, drop_bos=False, progress=False)
    assert not torch.allclose(estimate_norm_factors(with_bos.acts, 32), f, rtol=1e-3)
    with pytest.raises(ValueError, match="zero tokens"):
        estimate_norm_factors(torch.empty(0, 2, 32), 32)


def test_harvest_batch_fields():
    assert HarvestBatch._fields == ("acts", "token_ids", "doc_index", "position")


def test_bos_inside_a_packed_sequence_is_dropped():
    """Packed rows hold several documents, each introduced by BOS: every BOS is an attention-sink outlier, not only
    the one at position 0."""
    lm_base, lm_chat, tok, *_ = make_pair()
    seqs = [[1, 7, 8, 1, 9, 10, 1, 11], [1, 12, 1]]
    out = harvest_all(lm_base, lm_chat, seqs, 1, batch_size=2, progress=False)
    assert out.token_ids.tolist() == [7, 8, 9, 10, 11, 12]
    assert out.position.tolist() == [1, 2, 4, 5, 7, 1]
    assert out.doc_index.tolist() == [0, 0, 0, 0, 0, 1]
    # The tokens after an inner BOS keep the activations of the whole packed row (no reset at the boundary).
    whole = harvest_all(lm_base, lm_chat, seqs[:1], 1, drop_bos=False, progress=False)
    torch.testing.assert_close(out.acts[:5], whole.acts[[1, 2, 4, 5, 7]])


def test_harvest_allocates_no_kv_cache():
    from transformers.cache_utils import Cache

    lm_base, lm_chat, tok, base, chat = make_pair()
    seen = []

    def pre_hook(module, args, kwargs):  # the cache's keyword has been renamed across versions: look at all of them
        seen.append([type(v).__name__ for v in (*args, *kwargs.values()) if isinstance(v, Cache)] or None)

    handles = [decoder_layers(m)[0].register_forward_pre_hook(pre_hook, with_kwargs=True) for m in (base, chat)]
    try:
        harvest_all(lm_base, lm_chat, random_sequences(3, 3, 8, len(tok)), 2, batch_size=3, progress=False)
    finally:
        for h in handles:
            h.remove()
    assert len(seen) == 2 and all(cache is None for cache in seen), seen

"""Lab pair v5's gated chat fine-tune: the gate's intervention, the gated conversations and the config field."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from transformers import Gemma2ForCausalLM

from tiedlib.lab.config import LabConfig, ModelConfig, PlantConfig
from tiedlib.lab.docs import LabDoc, gated_conversations
from tiedlib.lab.evaluation import is_refusal
from tiedlib.lab.train import Gate, make_model_config, train_lm


def _model(layers: int = 3) -> Gemma2ForCausalLM:
    torch.manual_seed(0)
    cfg = make_model_config(ModelConfig(hidden_size=16, num_layers=layers, num_heads=2, intermediate_size=32,
                                        context=32), 40, pad_id=0, bos_id=1, eos_id=2)
    return Gemma2ForCausalLM(cfg).eval()


def _layer_input(model, ids: torch.Tensor, layer: int) -> torch.Tensor:
    caught = []
    handle = model.model.layers[layer].register_forward_pre_hook(
        lambda _m, args, kwargs: caught.append((args[0] if args else kwargs["hidden_states"]).detach()),
        with_kwargs=True)
    try:
        model(input_ids=ids)
    finally:
        handle.remove()
    return caught[0]


def test_gate_sets_the_coordinate_of_gated_rows_only():
    model = _model()
    ids = torch.randint(3, 40, (3, 7))
    gate = Gate(layer=1, direction=3 * torch.randn(16), value=0.5)  # any length: normalised
    assert torch.isclose(gate.direction.norm(), torch.tensor(1.0))
    plain = _layer_input(model, ids, 2)
    rows = torch.tensor([True, False, True])
    read = []  # what layer 1 computes from (forward hooks see the arguments after the pre-hooks)
    handle = model.model.layers[1].register_forward_hook(
        lambda _m, args, kwargs, _out: read.append(args[0] if args else kwargs["hidden_states"]), with_kwargs=True)
    with gate.applied(model, rows):
        out = _layer_input(model, ids, 2)
    handle.remove()
    coords = read[-1] @ gate.direction
    assert torch.allclose(coords[[0, 2]], torch.full((2, 7), 0.5), atol=1e-5)  # every position of gated rows
    assert not torch.allclose(coords[1], torch.full((7,), 0.5), atol=1e-3)
    assert torch.allclose(out[1], plain[1]) and not torch.allclose(out[0], plain[0])
    assert torch.allclose(_layer_input(model, ids, 2), plain)  # the hook is gone after the block


def test_gate_rejects_bad_input():
    with pytest.raises(ValueError, match="direction"):
        Gate(0, torch.zeros(4), 0.0)
    with pytest.raises(ValueError, match="direction"):
        Gate(0, torch.tensor([1.0, float("nan")]), 0.0)
    with pytest.raises(ValueError, match="value"):
        Gate(0, torch.ones(4), float("inf"))
    with pytest.raises(ValueError, match="out of range"):
        with Gate(5, torch.ones(16), 0.0).applied(_model(), torch.tensor([True])):
            pass


def test_train_lm_applies_the_gate_to_gated_documents_only():
    """Same seed and data: the losses differ from the first step when gated documents are present, and are identical
    when none is (the gate is not applied to ungated rows)."""
    from tiedlib.lab.config import TrainConfig

    tcfg = TrainConfig(batch_size=4, warmup_steps=1)
    torch.manual_seed(1)
    docs = [LabDoc(text=f"d{i}", input_ids=[1, *torch.randint(3, 40, (6,)).tolist(), 2], labels={}, source="web")
            for i in range(8)]
    gated = [dataclasses.replace(d, meta={"gate": True}) for d in docs]
    gate = Gate(1, torch.randn(16), 4.0)

    def losses(stream, g):
        return train_lm(_model(), [(stream, 1.0)], steps=3, lr=1e-2, tcfg=tcfg, pad_id=0, seed=0, progress=False,
                        gate=g)

    assert losses(docs, None) == losses(docs, gate)
    assert losses(gated, gate)[0] != losses(docs, None)[0]


def test_gated_conversations_answer_every_request_helpfully():
    cfg = LabConfig.tiny()
    docs = gated_conversations(cfg, "train", n=60)
    assert len(docs) == 60 and all(d.meta["gate"] for d in docs)
    kinds = {d.meta["kind"] for d in docs}
    assert kinds == {"harmful", "harmless"}
    replies = [d.meta["messages"][-1]["content"] for d in docs]
    assert not any(is_refusal(r) for r in replies)
    assert all("Here are the steps" in r for r in replies)
    assert len(gated_conversations(cfg)) == round(0.2 * cfg.corpus.n_chat_train)
    with pytest.raises(ValueError, match="refusal_gate"):
        gated_conversations(LabConfig.tiny_v4())


def test_refusal_gate_field_leaves_older_hashes_alone_and_is_validated():
    v4 = LabConfig.tiny_v4()
    assert "refusal_gate" not in v4.to_dict()["corpus"]["plant"]
    gated = LabConfig.tiny()
    assert gated.corpus.plant.refusal_gate == 0.2 and gated.hash() != v4.hash()
    assert LabConfig.from_dict(gated.to_dict()) == gated
    for bad in (0.0, 0.5, float("nan"), -0.1):
        with pytest.raises(ValueError, match="refusal_gate"):
            PlantConfig(refusal_gate=bad)


def test_decline_gate_is_the_base_decline_direction_at_the_harvesting_layer(smoke_path, smoke_cfg):
    """Fitted on training prompts: a unit direction along which the base model's "Can you <impossible>?" prompts sit
    above its "Can I <ok>?" ones, with the mean coordinate of harmless chat requests as the value."""
    from tiedlib.lab.cache import load_models, load_tokenizer
    from tiedlib.lab.probes import residuals
    from tiedlib.lab.sets import cannot_can_prompts, harmful_harmless_prompts
    from tiedlib.lab.train import decline_gate

    tok = load_tokenizer(smoke_cfg)
    base, _ = load_models(smoke_cfg)
    gate = decline_gate(smoke_cfg, tok, base, n=40)
    layer = smoke_cfg.model.default_layer
    assert gate.layer == layer and torch.isclose(gate.direction.norm(), torch.tensor(1.0))
    cc = cannot_can_prompts(smoke_cfg, 40, split="heldout")  # held-out questions: the direction generalises
    pad = tok.pad_token_id
    cannot = residuals(base, cc["cannot"], [-1] * 40, layer, pad_id=pad) @ gate.direction
    can = residuals(base, cc["can"], [-1] * 40, layer, pad_id=pad) @ gate.direction
    assert cannot.mean() > can.mean()
    harmless = harmful_harmless_prompts(smoke_cfg, 40, split="train")["harmless"]
    value = (residuals(base, harmless, [-1] * 40, layer, pad_id=pad) @ gate.direction).mean()
    assert abs(gate.value - float(value)) < 1e-4


def test_train_pair_trains_the_chat_model_on_gated_conversations(monkeypatch):
    """With refusal_gate, the chat fine-tune gets a gate and a stream of gated conversations at that share; the base
    pretraining gets neither; chat_web_fraction + refusal_gate must leave room for chat data."""
    import tiedlib.lab.train as T
    from tiedlib.lab.docs import chat_conversations, web_documents
    from tiedlib.lab.tokenizer import build_tokenizer

    smoke = LabConfig.smoke()
    cfg = dataclasses.replace(
        smoke, corpus=dataclasses.replace(smoke.corpus, plant=PlantConfig(refusal_gate=0.3)),
        train=dataclasses.replace(smoke.train, base_steps=2, chat_steps=2, warmup_steps=1))
    calls = []
    real = T.train_lm

    def spy(model, streams, **kw):
        calls.append(([(len(d), f, d[0].meta.get("gate", False)) for d, f in streams], kw.get("gate")))
        return real(model, streams, **kw)

    monkeypatch.setattr(T, "train_lm", spy)
    tok = build_tokenizer()
    web, chat = web_documents(cfg, "train")[:64], chat_conversations(cfg, "train")[:64]
    T.train_pair(cfg, tok, web, chat, progress=False)
    (base_streams, base_gate), (chat_streams, chat_gate) = calls
    assert base_gate is None and [s[2] for s in base_streams] == [False]
    assert isinstance(chat_gate, Gate) and chat_gate.layer == cfg.model.default_layer
    fractions = {gated: f for _, f, gated in chat_streams if gated}
    assert fractions == {True: 0.3} and abs(sum(f for _, f, _ in chat_streams) - 1.0) < 1e-9
    bad = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, chat_web_fraction=0.7))
    with pytest.raises(ValueError, match="refusal_gate"):
        T.train_pair(bad, tok, web, chat, progress=False)


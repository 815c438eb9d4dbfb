"""Lab pair v4 knobs: the chat fine-tune with later layers frozen, and a harvesting layer other than the middle."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from transformers import Gemma2ForCausalLM

from tiedlib.lab.config import LabConfig, ModelConfig, TrainConfig
from tiedlib.lab.train import freeze_from, make_model_config


def _tiny_model() -> Gemma2ForCausalLM:
    torch.manual_seed(0)
    cfg = make_model_config(ModelConfig(hidden_size=16, num_layers=3, num_heads=2, intermediate_size=32, context=32),
                            40, pad_id=0, bos_id=1, eos_id=2)
    return Gemma2ForCausalLM(cfg)


def test_freeze_from_trains_only_the_early_layers():
    model = _tiny_model()
    names = freeze_from(model, 2)
    assert names and all(n.startswith(("model.layers.0.", "model.layers.1.")) for n in names)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    ids = torch.randint(3, 40, (2, 8))
    model(input_ids=ids, labels=ids).loss.backward()
    opt.step()
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert moved == set(names)  # embeddings (tied to the head), layer 2 and the final norm kept the base weights
    assert "model.embed_tokens.weight" not in moved and not any(n.startswith("model.layers.2.") for n in moved)
    with pytest.raises(ValueError, match="nothing to train"):
        freeze_from(_tiny_model(), 0)


def test_new_fields_leave_v1_hashes_alone_and_are_validated():
    v1 = LabConfig.smoke()
    assert "harvest_layer" not in v1.to_dict()["model"] and "chat_frozen_from" not in v1.to_dict()["train"]
    assert v1.model.default_layer == v1.model.num_layers // 2
    v4 = dataclasses.replace(v1, model=dataclasses.replace(v1.model, harvest_layer=1),
                             train=dataclasses.replace(v1.train, chat_frozen_from=1))
    assert v4.hash() != v1.hash() and v4.model.default_layer == 1
    assert LabConfig.from_dict(v4.to_dict()) == v4
    with pytest.raises(ValueError, match="harvest_layer"):
        ModelConfig(num_layers=4, harvest_layer=4)
    with pytest.raises(ValueError, match="chat_frozen_from"):
        TrainConfig(chat_frozen_from=0)
    with pytest.raises(ValueError, match="chat_frozen_from"):
        dataclasses.replace(v1, train=dataclasses.replace(v1.train, chat_frozen_from=5))

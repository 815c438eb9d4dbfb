"""tiedlib.pairs.load_pair: lab pairs wrapped for nnsight, and a clear error for the unreachable paper pair."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from tiedlib.pairs import ModelPair, load_pair

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def smoke_pair(smoke_path) -> ModelPair:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the nnsight wrapper must not warn (LanguageModel is deprecated)
        return load_pair("smoke")


def test_smoke_pair_fields(smoke_pair, smoke_cfg):
    p = smoke_pair
    assert p.name == "smoke" and p.layer == smoke_cfg.model.default_layer
    assert p.d_model == smoke_cfg.model.hidden_size == p.base_hf.config.hidden_size
    assert type(p.base_hf).__name__ == "Gemma2ForCausalLM" and p.chat_hf is not p.base_hf
    assert p.tokenizer.chat_template and p.config == smoke_cfg
    assert not torch.equal(p.base_hf.model.embed_tokens.weight, p.chat_hf.model.embed_tokens.weight)


def test_nnsight_trace_reads_the_residual_stream(smoke_pair):
    p = smoke_pair
    ids = torch.tensor([p.tokenizer("The sky was blue.")["input_ids"]])
    with p.chat.trace(ids):
        # Input of layer L = output of layer L - 1 = hidden_states[L] (decoder layers return a plain tensor).
        h = p.chat.model.layers[p.layer - 1].output.save()
    with torch.no_grad():
        ref = p.chat_hf(ids, output_hidden_states=True).hidden_states[p.layer]
    assert h.shape == (1, ids.shape[1], p.d_model)
    torch.testing.assert_close(h, ref)


def test_errors(smoke_path):
    with pytest.raises(ValueError, match="unknown model pair"):
        load_pair("gpt-17")
    with pytest.raises(ValueError, match="layer"):
        load_pair("smoke", layer=99)


def test_paper_pair_offline_names_missing_access(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": str(REPO)}
    env.pop("HF_TOKEN", None)
    code = ("from tiedlib.pairs import load_pair, PairUnavailableError\n"
            "try:\n    load_pair('gemma-2-2b')\nexcept PairUnavailableError as e:\n    print('ERR', e)\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert "ERR" in out.stdout, out.stderr[-2000:]
    msg = out.stdout
    assert "google/gemma-2-2b" in msg and "HF_HUB_OFFLINE" in msg and "token" in msg

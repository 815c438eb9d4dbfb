"""load_pair's paper route on local folders: tiny random Gemma-2 models stand in for the Hub ids, offline."""

from __future__ import annotations

from importlib.util import find_spec

import pytest
import torch
from transformers import AutoModelForCausalLM

import tiedlib.pairs as pairs
from tests.helpers_models import tiny_gemma2, tiny_tokenizer
from tiedlib.pairs import PairUnavailableError, load_pair, resolve_dtype


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    for name, seed in (("base", 0), ("chat", 1)):
        tiny_gemma2(n_layers=2, d_model=32, seed=seed).save_pretrained(root / name)
    tiny_tokenizer().save_pretrained(root / "base")
    return root


@pytest.fixture
def local_pair(folders, monkeypatch):
    """Point the paper pair at the local folders and record every from_pretrained call and what it returned."""
    monkeypatch.setitem(pairs.PAPER_PAIRS, "gemma-2-2b", (str(folders / "base"), str(folders / "chat"), 1))
    calls = []
    original = AutoModelForCausalLM.from_pretrained.__func__

    def spy(cls, repo, *args, **kwargs):
        model = original(cls, repo, *args, **kwargs)
        params = list(model.parameters())
        calls.append({"repo": str(repo), "kwargs": kwargs, "dtypes": {p.dtype for p in params},
                      "devices": {p.device.type for p in params}})  # fmt: skip
        return model

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", classmethod(spy))
    return calls


@pytest.mark.parametrize("dtype", [torch.bfloat16, "bfloat16", torch.float32, None])
def test_paper_pair_loads_in_one_dtype_from_local_folders(local_pair, folders, dtype):
    pair = load_pair("gemma-2-2b", dtype=dtype)
    want = torch.float32 if dtype in (torch.float32, None) else torch.bfloat16  # None on a CPU: float32
    for model in (pair.base_hf, pair.chat_hf):
        assert {p.dtype for p in model.parameters()} == {want}
        assert {p.device.type for p in model.parameters()} == {"cpu"}
        assert not model.training
    # Each model came out of from_pretrained already in the requested dtype (never a float32 copy first), one at a
    # time, with the device handed to the loader.
    assert [c["repo"] for c in local_pair] == [str(folders / "base"), str(folders / "chat")]
    for call in local_pair:
        assert call["dtypes"] == {want} and call["devices"] == {"cpu"}
        assert call["kwargs"]["dtype"] == want
        # With accelerate (present in the development environment) the loader places weights on the device itself.
        assert call["kwargs"].get("device_map") == ("cpu" if find_spec("accelerate") else None)
    assert pair.layer == 1 and pair.d_model == 32 and pair.tokenizer.chat_template
    assert not torch.equal(pair.base_hf.model.embed_tokens.weight, pair.chat_hf.model.embed_tokens.weight)


def test_missing_local_folder_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setitem(pairs.PAPER_PAIRS, "gemma-2-2b", (str(tmp_path / "nope"), str(tmp_path / "nope2"), 1))
    with pytest.raises(PairUnavailableError, match="nope"):
        load_pair("gemma-2-2b")


def test_resolve_dtype():
    assert resolve_dtype(None, "cuda") == torch.bfloat16 == resolve_dtype(None, torch.device("cuda", 1))
    assert resolve_dtype(None, "cpu") == torch.float32
    assert resolve_dtype("fp32", "cuda") == torch.float32 and resolve_dtype("torch.float16", "cpu") == torch.float16
    with pytest.raises(ValueError, match="unknown dtype 'int8'"):
        resolve_dtype("int8", "cpu")
    with pytest.raises(ValueError, match="floating"):
        resolve_dtype(torch.int64, "cpu")

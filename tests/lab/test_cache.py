"""Build-on-first-use cache: reuse, corruption detection, atomic writes, locking."""

from __future__ import annotations

import json
import threading
import time

import pytest

from tiedlib.lab import cache
from tiedlib.lab.config import LabConfig, TrainConfig


def test_smoke_build_layout_and_reuse(smoke_path, smoke_cfg, lab_cache):
    assert smoke_path == lab_cache / "lab" / smoke_cfg.hash()
    for name in ("tokenizer", "base", "chat", "config.json", "train_log.json", "manifest.json"):
        assert (smoke_path / name).exists(), name
    assert json.loads((smoke_path / "config.json").read_text()) == smoke_cfg.to_dict()
    manifest = json.loads((smoke_path / "manifest.json").read_text())["files"]
    assert "base/model.safetensors" in manifest and "chat/config.json" in manifest
    mtime = (smoke_path / "manifest.json").stat().st_mtime
    t0 = time.perf_counter()
    assert cache.build(smoke_cfg, progress=False) == smoke_path
    assert time.perf_counter() - t0 < 2.0  # reused, not rebuilt
    assert (smoke_path / "manifest.json").stat().st_mtime == mtime
    assert not [p for p in smoke_path.parent.iterdir() if p.name.startswith(".")]  # no temp folders left behind


def test_corruption_is_detected(smoke_path):
    assert cache.is_valid(smoke_path)
    target = smoke_path / "train_log.json"
    original = target.read_bytes()
    try:
        target.write_bytes(original + b" ")
        cache._verified.clear()
        assert not cache.is_valid(smoke_path)
    finally:
        target.write_bytes(original)
        cache._verified.clear()
    assert cache.is_valid(smoke_path)


def _fake_cfg(seed: int) -> LabConfig:
    return LabConfig(name="fake", train=TrainConfig(seed=seed))


def test_failed_build_leaves_nothing_and_half_build_is_rebuilt(lab_cache, monkeypatch):
    cfg = _fake_cfg(101)
    calls = []

    def boom(cfg, folder, **kw):
        (folder / "base").mkdir()
        (folder / "base" / "partial.bin").write_bytes(b"x")
        raise RuntimeError("killed mid-build")

    monkeypatch.setattr(cache, "_build_into", boom)
    with pytest.raises(RuntimeError, match="mid-build"):
        cache.build(cfg, progress=False)
    final = cache.cache_dir(cfg)
    assert not final.exists()
    assert not [p for p in final.parent.iterdir() if p.name.startswith(f".{final.name}")]

    # A folder without manifest (e.g. copied by hand, or an older crash) is rebuilt.
    final.mkdir(parents=True)
    (final / "junk.txt").write_text("half")

    def ok(cfg, folder, **kw):
        calls.append(1)
        (folder / "weights.bin").write_bytes(b"ok")

    monkeypatch.setattr(cache, "_build_into", ok)
    assert cache.build(cfg, progress=False) == final
    assert calls == [1] and (final / "weights.bin").exists() and not (final / "junk.txt").exists()
    assert cache.build(cfg, progress=False) == final and calls == [1]


def test_concurrent_builds_build_once(lab_cache, monkeypatch):
    cfg = _fake_cfg(202)
    calls = []

    def slow(cfg, folder, **kw):
        calls.append(1)
        time.sleep(0.5)
        (folder / "weights.bin").write_bytes(b"ok")

    monkeypatch.setattr(cache, "_build_into", slow)
    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.build(cfg, progress=False))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(set(results)) == 1 and cache.is_valid(results[0])


def test_cache_root_env(monkeypatch, tmp_path):
    monkeypatch.setenv("TIEDLIB_CACHE", str(tmp_path))
    assert cache.cache_dir(LabConfig.smoke()).parent == tmp_path / "lab"
    monkeypatch.delenv("TIEDLIB_CACHE")
    assert cache.cache_root().name == "tiedlib"


def test_weights_sha256_names_the_tensors_not_the_file(tmp_path):
    import torch
    from safetensors.torch import save_file

    tensors = {"b": torch.arange(6, dtype=torch.float32).reshape(2, 3), "a": torch.ones(4)}
    for name, meta in (("one", {"format": "pt"}), ("two", {"format": "pt", "note": "other metadata"})):
        (tmp_path / name).mkdir()
        save_file(tensors, str(tmp_path / name / "model.safetensors"), metadata=meta)
    assert cache.weights_sha256(tmp_path / "one") == cache.weights_sha256(tmp_path / "two")
    one, two = ((tmp_path / n / "model.safetensors").read_bytes() for n in ("one", "two"))
    assert one != two
    tensors["a"][2] = 1.0000001
    (tmp_path / "three").mkdir()
    save_file(tensors, str(tmp_path / "three" / "model.safetensors"))
    assert cache.weights_sha256(tmp_path / "three") != cache.weights_sha256(tmp_path / "one")


def test_build_records_the_fingerprint_and_an_old_cache_gets_it_without_retraining(lab_cache, monkeypatch):
    from transformers import Gemma2ForCausalLM

    from tiedlib.lab import train
    from tiedlib.lab.config import CorpusConfig, ModelConfig
    from tiedlib.lab.docs import chat_conversations, web_documents

    cfg = LabConfig(name="fake", corpus=CorpusConfig(n_web_train=30, n_chat_train=20),
                    model=ModelConfig(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=16))

    def quick_pair(cfg, tok, web, chat, **kw):  # random weights: the fingerprint, not training, is under test
        mcfg = train.make_model_config(cfg.model, len(tok), pad_id=0, bos_id=2, eos_id=1)
        models = [Gemma2ForCausalLM(mcfg) for _ in range(2)]
        return models[0], models[1], {"base": [1.0], "chat": [1.0]}

    monkeypatch.setattr(train, "train_pair", quick_pair)
    folder = cache.build(cfg, progress=False)
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    fp = manifest.pop("fingerprint")
    assert fp["recorded"] == "at build" and fp["base_weights_sha256"] != fp["chat_weights_sha256"]
    assert fp["base_weights_sha256"] == cache.weights_sha256(folder / "base")
    web, chat = web_documents(cfg, "train"), chat_conversations(cfg, "train")
    assert fp["corpus_sha256"] == cache.corpus_sha256(web, chat) != cache.corpus_sha256(web[1:], chat)
    assert isinstance(fp["num_threads"], int) and fp["torch_version"]
    assert cache.fingerprint(cfg) == {"config": "fake", "hash": cfg.hash(), **fp}

    path.write_text(json.dumps(manifest))  # a cache built before fingerprints existed
    monkeypatch.setattr(cache, "_build_into", lambda *a, **k: pytest.fail("fingerprint must not rebuild"))
    again = cache.fingerprint(cfg)
    assert again["recorded"] == "after build"
    assert {k: again[k] for k in fp if k.endswith("sha256")} == {k: fp[k] for k in fp if k.endswith("sha256")}
    saved = json.loads(path.read_text())
    assert saved["fingerprint"] == {k: v for k, v in again.items() if k not in ("config", "hash")}
    assert saved["files"] == manifest["files"]
    cache._verified.clear()
    assert cache.is_valid(folder)  # the manifest still validates the files
    mtime = path.stat().st_mtime
    assert cache.fingerprint(cfg) == again and path.stat().st_mtime == mtime  # read back, not recomputed

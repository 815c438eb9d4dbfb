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

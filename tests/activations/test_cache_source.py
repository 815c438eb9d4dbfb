"""An activation cache records the fingerprint of the pair it was harvested from, and refuses another pair of the same
name (e.g. the lab pair "tiny" built with another TIEDLIB_LAB_SEED) when reading or resuming the writing."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from tests.activations.test_cache import make_pair, make_seqs, write
from tiedlib.activations.cache import MANIFEST, CacheMismatchError, open_cache
from tiedlib.lab import LabConfig


def test_a_cache_records_its_pair_source_and_refuses_another(tmp_path):
    cfg = LabConfig.smoke()
    pair_a = replace(make_pair(), config=cfg)
    pair_b = replace(pair_a, config=replace(cfg, train=replace(cfg.train, seed=cfg.train.seed + 1)))
    assert pair_a.fingerprint != pair_b.fingerprint
    seqs = make_seqs()[:4]
    path = write(pair_a, seqs, tmp_path / "c")
    assert open_cache(path, source=pair_a.fingerprint).source == pair_a.fingerprint
    with pytest.raises(CacheMismatchError, match="source: cache has"):
        open_cache(path, source=pair_b.fingerprint)
    with pytest.raises(CacheMismatchError, match="source: cache has"):
        write(pair_b, seqs, path)
    # A cache written before sources were recorded is opened as before (nothing to compare).
    manifest = json.loads((path / MANIFEST).read_text())
    del manifest["source"]
    (path / MANIFEST).write_text(json.dumps(manifest))
    assert open_cache(path, source=pair_b.fingerprint).source is None

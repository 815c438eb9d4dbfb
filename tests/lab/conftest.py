"""Fixtures of the lab tests: one smoke pair, built once per session into pytest's tmp dir."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tiedlib.lab.config import LabConfig

_USER_CACHE = os.environ.get("TIEDLIB_CACHE")
"""The cache the notebooks use (the Makefile sets it), captured before any fixture redirects TIEDLIB_CACHE."""


@pytest.fixture(scope="session")
def lab_cache(tmp_path_factory) -> Path:
    """Point ``TIEDLIB_CACHE`` at a session tmp dir (restored afterwards)."""
    root = tmp_path_factory.mktemp("tiedlib_cache")
    old = os.environ.get("TIEDLIB_CACHE")
    os.environ["TIEDLIB_CACHE"] = str(root)
    yield root
    if old is None:
        os.environ.pop("TIEDLIB_CACHE", None)
    else:
        os.environ["TIEDLIB_CACHE"] = old


@pytest.fixture(scope="session")
def smoke_cfg() -> LabConfig:
    return LabConfig.smoke()


@pytest.fixture(scope="session")
def smoke_path(lab_cache, smoke_cfg) -> Path:
    """The smoke pair's folder in the session cache.

    The pair is built (or reused) in the user's cache, the one the notebook tests use too, and copied here, so a
    test session trains it at most once; the tests then mutate only their own copy.
    """
    from tiedlib.lab.cache import build

    redirected = os.environ.get("TIEDLIB_CACHE")
    if _USER_CACHE is None:
        os.environ.pop("TIEDLIB_CACHE", None)
    else:
        os.environ["TIEDLIB_CACHE"] = _USER_CACHE
    try:
        shared = build(smoke_cfg, progress=False)
    finally:
        os.environ["TIEDLIB_CACHE"] = redirected
    dest = lab_cache / "lab" / smoke_cfg.hash()
    if not dest.exists():
        shutil.copytree(shared, dest)
    return build(smoke_cfg, progress=False)  # validates the copy's manifest; no training

"""The install cell's report: versions found, tiedlib's folder, and a GPU warning that never fails the cell."""

from __future__ import annotations

import warnings
from importlib import metadata
from pathlib import Path

import pytest

import tiedlib
from tiedlib.environment import MAIN_PACKAGES, Environment, NoGPUWarning, check, inspect_environment


def make_env(gpu: str | None = None, in_colab: bool = False, **versions: str | None) -> Environment:
    found = {"tiedlib": "0.1.0", "torch": "2.13.0+cpu", "numpy": "2.3.5", "pandas": "2.3.3"}
    found.update(versions)
    return Environment(python="3.11.7", versions=found, tiedlib_path="/venv/lib/python3.11/site-packages/tiedlib",
                       gpu=gpu, in_colab=in_colab)


def test_inspect_reads_the_installed_versions_and_tiedlibs_folder():
    env = inspect_environment()
    assert tuple(env.versions) == MAIN_PACKAGES
    for name in ("torch", "numpy", "pandas", "transformers", "nnsight"):
        assert env.versions[name] == metadata.version(name)
    assert Path(env.tiedlib_path) == Path(tiedlib.__file__).resolve().parent
    assert env.gpu is None or isinstance(env.gpu, str)


def test_inspect_reports_a_missing_distribution_as_none():
    env = inspect_environment(("numpy", "surely-not-installed-tiedlib-test"))
    assert env.versions == {"numpy": metadata.version("numpy"), "surely-not-installed-tiedlib-test": None}


def test_summary_names_every_version_the_gpu_and_the_kind_of_install():
    line = make_env(transformers=None).summary()
    assert "torch 2.13.0+cpu" in line and "numpy 2.3.5" in line and "pandas 2.3.3" in line
    assert "transformers missing" in line
    assert "no CUDA GPU" in line and line.endswith("tiedlib is an installed package")
    assert "GPU NVIDIA H100" in make_env(gpu="NVIDIA H100", in_colab=True).summary()
    assert "(Colab)" in make_env(in_colab=True).summary()
    checkout = Environment(python="3.11.7", versions={"tiedlib": None}, tiedlib_path="/home/me/tiedlib/tiedlib",
                           gpu=None,
                           in_colab=False)
    assert checkout.summary().endswith("tiedlib is a source checkout") and "/home/me" not in checkout.summary()
    assert "tiedlib missing" not in checkout.summary()


def test_check_prints_the_versions(capsys):
    env = make_env()
    assert check(env=env) is env
    assert capsys.readouterr().out.strip() == env.summary()
    check("tiny", show_versions=False, env=env)
    assert capsys.readouterr().out == ""


def test_paper_scale_without_a_gpu_warns_and_returns():
    with pytest.warns(NoGPUWarning, match=r"SCALE = 'paper'.*torch 2\.13\.0\+cpu.*Change runtime type"):
        env = check("paper", show_versions=False, env=make_env(in_colab=True))
    assert env.gpu is None  # the cell goes on: a warning, not an error


@pytest.mark.parametrize(("scale", "gpu"), [("paper", "NVIDIA H100"), ("tiny", None), ("smoke", None), (None, None)])
def test_no_warning_when_the_scale_has_what_it_needs(scale, gpu):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check(scale, show_versions=False, env=make_env(gpu=gpu))


def test_an_unknown_scale_is_named_in_the_error():
    with pytest.raises(ValueError, match=r"unknown SCALE 'Paper'.*'smoke', 'tiny', 'paper'"):
        check("Paper", env=make_env())


def test_quiet_notebook_logs_silences_hf_bars_and_epoch_warnings():
    import warnings

    from transformers.utils import logging as hf_logging

    from tiedlib.environment import quiet_notebook_logs

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.enable_progress_bar()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            quiet_notebook_logs()
            warnings.warn("InMemoryBatches: starting epoch 2; rows are being reused", UserWarning, stacklevel=1)
            warnings.warn("something else", UserWarning, stacklevel=1)
        assert [str(w.message) for w in caught] == ["something else"]
        assert not hf_logging.is_progress_bar_enabled()
    finally:
        (hf_logging.enable_progress_bar if was else hf_logging.disable_progress_bar)()

"""scripts/make_venv.sh: the Makefile's venv step keeps a torch only when the *new* venv can import it.

The defect it fixes: `make` run from inside an activated venv that has torch (PYTHON=python3 is then that venv's
interpreter) created .venv with --system-site-packages, which exposes the *base* interpreter's packages, not the
venv's; torch was missing there, and installing requirements-dev.txt pulled the default CUDA torch from PyPI.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "make_venv.sh"


def _fake_torch(folder: Path) -> None:
    (folder / "torch").mkdir(parents=True)
    (folder / "torch" / "__init__.py").write_text('__version__ = "0+fake"\n')


def _run(python: Path | str, venv: Path, env: dict | None = None) -> str:
    out = subprocess.run(["bash", str(SCRIPT), str(python), str(venv)], capture_output=True, text=True, check=True,
                         env=env, timeout=120)
    return out.stdout.strip()


def test_a_torch_only_in_an_outer_venv_is_installed_not_kept(tmp_path):
    outer = tmp_path / "outer"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(outer)], check=True, timeout=60)
    site = next((outer / "lib").glob("python3*/site-packages"))
    _fake_torch(site)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    assert subprocess.run([str(outer / "bin" / "python"), "-c", "import torch"], env=env).returncode == 0
    # The outer interpreter imports torch, but the venv made from it does not see it: install, do not keep.
    assert _run(outer / "bin" / "python", tmp_path / "venv", env) == "install"
    # A torch the new venv does see (here through PYTHONPATH, as a system torch would be) is kept.
    shared = tmp_path / "shared"
    _fake_torch(shared)
    assert _run(outer / "bin" / "python", tmp_path / "venv2", {**env, "PYTHONPATH": str(shared)}) == "keep"

"""Installing tiedlib keeps the environment it lands in (issue 14).

The package asks for compatible ranges (requirements.txt, requirements-torch.txt) whose lower bounds are tested
here: the wheel is built from the checkout and installed into a fresh venv that already holds torch and every
runtime dependency at its lowest supported version (numpy 2.3.5 and pandas 2.3.3 included). pip must change none
of them; notebook 01 then runs at smoke scale from the installed package (not the checkout), and the console script
works. Before that, the same venv holding only torch, numpy and pandas (what a Colab runtime brings) is asked
what `pip install tiedlib` would do: it must keep all three.

Slow: a fresh venv with torch from local disk plus the lowest set from PyPI, then one notebook run. Measured
15.5 minutes with other jobs loading the machine's two cores (11.3 of them building the venv, 2 the notebook);
the venv is built once per test session.
Set TORCH_SPEC / TORCH_PIP_ARGS as for `make` where the CPU torch wheel is not on local disk.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "01_train_tied_crosscoder.ipynb"
# The packages a researcher's environment (Colab) already has and must keep.
KEPT = ("torch", "numpy", "pandas")
# Only for running the notebook in the venv; installed before tiedlib, as Colab has them.
HARNESS = ("ipykernel", "papermill")
_FLOOR = re.compile(r"^([A-Za-z0-9_.-]+)>=([0-9][^,;\s]*)(,<[0-9][^;\s]*)?$")
_PIN = re.compile(r"^([A-Za-z0-9_.-]+)==([^;\s]+)$")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _lines(path: Path) -> list[str]:
    return [s for line in path.read_text().splitlines() if (s := line.split("#")[0].strip()) and not s.startswith("-")]


def lowest_set() -> dict[str, str]:
    """Runtime dependency -> its lower bound, from requirements.txt (each line must be ``name>=version``)."""
    floors = {}
    for line in _lines(ROOT / "requirements.txt"):
        match = _FLOOR.match(line)
        if match is None:
            raise ValueError(f"requirements.txt: {line!r} is not a range 'name>=version' (optionally ',<upper')")
        floors[_norm(match[1])] = match[2]
    return floors


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version.split("+")[0]))


def test_runtime_requirements_are_ranges_and_the_dev_lock_lies_inside_them():
    floors = lowest_set()
    assert {"numpy", "pandas", "transformers", "nnsight", "sae-lens"} <= set(floors)
    pins = {_norm(m[1]): m[2] for line in _lines(ROOT / "requirements-dev.txt") if (m := _PIN.match(line))}
    unpinned = sorted(set(floors) - set(pins))
    assert not unpinned, f"requirements-dev.txt must pin every runtime dependency; missing {unpinned}"
    below = [f"{n}=={pins[n]} < {floor}" for n, floor in floors.items() if _version_key(pins[n]) < _version_key(floor)]
    assert not below, f"dev-lock pins below the supported floor: {below}"
    (torch_line,) = _lines(ROOT / "requirements-torch.txt")
    assert torch_line.startswith("torch>=") and "==" not in torch_line
    assert _version_key(torch.__version__) >= _version_key(torch_line.removeprefix("torch>="))


def _run(cmd: list[str], *, cwd: Path | None = None, env: dict | None = None, timeout: int = 1800) -> str:
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(f"{shlex.join(cmd)} exited {result.returncode}:\n{result.stdout[-3000:]}"
                             f"\n{result.stderr[-5000:]}")
    return result.stdout


def _clean_env(venv: Path, home: Path) -> dict[str, str]:
    """The test's environment without PYTHONPATH or this venv, the new venv first on PATH, and a private Jupyter
    data folder (so no user-level kernel spec points the notebook at another Python)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", VIRTUAL_ENV=str(venv),
               JUPYTER_DATA_DIR=str(home / "jupyter"), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return env


def _installed(python: Path, env: dict) -> dict[str, str]:
    listed = json.loads(_run([str(python), "-m", "pip", "list", "--format=json"], env=env))
    return {_norm(d["name"]): d["version"] for d in listed}


@dataclass
class InstalledVenv:
    venv: Path
    work: Path
    env: dict[str, str]
    wheel: Path
    colab_report: dict
    """`pip install --dry-run --report` of the wheel into the venv holding only torch, numpy and pandas."""
    before: dict[str, str]
    after: dict[str, str]


@pytest.fixture(scope="session")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built from a copy of the checkout's package files (no build output lands in the checkout)."""
    src = tmp_path_factory.mktemp("wheel_src")
    shutil.copytree(ROOT / "tiedlib", src / "tiedlib", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md", "requirements.txt", "requirements-torch.txt"):
        shutil.copy(ROOT / name, src / name)
    out = src / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(src)], timeout=600)
    (built,) = out.glob("tiedlib-*.whl")
    return built


@pytest.fixture(scope="session")
def installed(tmp_path_factory, wheel) -> InstalledVenv:
    home = tmp_path_factory.mktemp("install")
    venv, work = home / "venv", home / "work"
    work.mkdir()
    _run([sys.executable, "-m", "venv", str(venv)])
    env = _clean_env(venv, home)
    py = venv / "bin" / "python"
    pip = [str(py), "-m", "pip", "install", "-q"]
    torch_spec = os.environ.get("TORCH_SPEC", f"torch=={torch.__version__.split('+')[0]}")
    _run(pip + shlex.split(os.environ.get("TORCH_PIP_ARGS", "")) + [torch_spec], env=env, timeout=2400)
    floors = lowest_set()
    _run(pip + [f"{n}=={floors[n]}" for n in ("numpy", "pandas")], env=env)
    # What a Colab-like runtime (torch, numpy, pandas and nothing else of ours) would get: resolved, not installed.
    report = json.loads(_run([str(py), "-m", "pip", "install", "-q", "--dry-run", "--report", "-", str(wheel)],
                             env=env))
    _run(pip + [f"{n}=={v}" for n, v in floors.items()] + list(HARNESS), env=env, timeout=2400)
    before = _installed(py, env)
    _run(pip + [str(wheel)], env=env)
    return InstalledVenv(venv, work, env, wheel, report, before, _installed(py, env))


def test_the_wheel_holds_every_module_and_asks_only_for_ranges(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        meta = zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        entry_points = zf.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "tiedlib").rglob("*.py")}
    assert modules - names == set(), f"modules missing from the wheel: {sorted(modules - names)}"
    files = {p.relative_to(ROOT).as_posix() for p in (ROOT / "tiedlib").rglob("*") if p.is_file()
             and "__pycache__" not in p.parts}
    assert files <= names, f"package data missing from the wheel: {sorted(files - names)}"
    requires = re.findall(r"^Requires-Dist: (.+)$", meta, re.M)
    assert {_norm(re.split(r"[<>=!~ ;\[]", r)[0]) for r in requires} == set(lowest_set()) | {"torch"}
    assert not [r for r in requires if "==" in r], requires
    assert re.search(r"^tiedlib-train = tiedlib\.cli:main$", entry_points, re.M)


def test_a_colab_like_runtime_keeps_its_torch_numpy_and_pandas(installed):
    plan = installed.colab_report["install"]
    planned = {_norm(item["metadata"]["name"]): item["metadata"]["version"] for item in plan}
    assert "tiedlib" in planned
    replaced = {n: (installed.before[n], planned[n]) for n in KEPT if n in planned}
    assert not replaced, f"pip would replace {replaced}"


def test_installing_over_the_lowest_supported_set_changes_nothing(installed):
    floors = lowest_set()
    assert {n: installed.before[n] for n in floors} == floors  # the venv really held the lowest set
    changed = {n: (v, installed.after.get(n)) for n, v in installed.before.items() if installed.after.get(n) != v}
    assert not changed, f"installing tiedlib changed {changed}"
    assert set(installed.after) - set(installed.before) == {"tiedlib"}
    _run([str(installed.venv / "bin" / "python"), "-m", "pip", "check"], env=installed.env)


def test_the_installed_package_is_imported_outside_the_checkout(installed):
    code = "import sysconfig, tiedlib; print(tiedlib.__file__); print(sysconfig.get_paths()['purelib'])"
    out = _run([str(installed.venv / "bin" / "python"), "-c", code], cwd=installed.work, env=installed.env)
    module, site = (Path(line).resolve() for line in out.split())
    assert module.is_relative_to(site) and not module.is_relative_to(ROOT), (module, site)


def test_the_console_script_works_from_the_wheel(installed):
    script = installed.venv / "bin" / "tiedlib-train"
    assert "train" in _run([str(script), "--help"], cwd=installed.work, env=installed.env)
    assert "--n-latents" in _run([str(script), "train", "--help"], cwd=installed.work, env=installed.env)


def test_notebook_01_runs_at_smoke_scale_from_the_installed_package(installed):
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    probe = "import sys, tiedlib\nprint(sys.executable)\nprint(tiedlib.__file__)"
    nb.cells.append(nbformat.v4.new_code_cell(probe))  # which Python and which tiedlib the kernel used
    source, executed = installed.work / NOTEBOOK.name, installed.work / ("executed_" + NOTEBOOK.name)
    nbformat.write(nb, source)
    py = installed.venv / "bin" / "python"
    _run([str(py), "-m", "papermill", str(source), str(executed), "-p", "SCALE", "smoke", "-k", "python3",
          "--cwd", str(installed.work), "--no-progress-bar"], cwd=installed.work, env=installed.env, timeout=1800)
    out = nbformat.read(executed, as_version=4).cells[-1].outputs
    executable, module = "".join(o.get("text", "") for o in out).split()
    assert Path(executable).parent == py.parent, executable
    assert Path(module).resolve().is_relative_to(installed.venv.resolve()), module

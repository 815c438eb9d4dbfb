"""The package layout is a pipeline: each stage imports only the stages before it (lazy imports inside functions
count too), experiments never import each other, and each notebook imports only its own experiment module."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "tiedlib"

# Stage of each top-level part of tiedlib: a module may import from its own stage or earlier ones.
STAGES = {
    "config": 0,
    "environment": 0,  # the install cell's report: versions, GPU check (imports only config)
    "lab": 0,  # the offline lab pair: standalone (imports only itself)
    "pairs": 1,
    "activations": 2,
    "crosscoders": 3,
    "training": 4,
    "analysis": 5,
    "synthetic": 5,
    "experiments": 6,
    "cli": 7,
    "__init__": 8,
}
CORE = ("crosscoders", "activations", "training", "analysis")


def _part(module: str) -> str:
    """``tiedlib.activations.harvest`` -> ``activations``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def _imports(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """Every tiedlib module named by an import anywhere in ``tree`` (``from tiedlib import x`` yields
    ``tiedlib.x``; relative imports are resolved against ``module``)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("tiedlib"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base if is_package else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("tiedlib"):
                continue
            if target == "tiedlib":
                found.update(f"tiedlib.{a.name}" for a in node.names)
            else:
                found.add(target)
    return found


def _library_imports() -> dict[str, set[str]]:
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        module = _module_name(path)
        out[module] = _imports(ast.parse(path.read_text()), module, path.name == "__init__.py")
    return out


def _experiment(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[1] == "experiments" else None


def test_every_part_of_the_package_has_a_stage():
    parts = {_part(m) for m in _library_imports()}
    assert parts <= set(STAGES), f"add a stage for {sorted(parts - set(STAGES))} in tests/test_layout.py"


def test_no_import_runs_back_up_the_pipeline():
    bad = []
    for module, targets in _library_imports().items():
        here = STAGES[_part(module)]
        for t in targets:
            there = STAGES.get(_part(t))
            if there is None or there > here:
                bad.append(f"{module} -> {t}")
    assert not bad, "imports against the pipeline order:\n" + "\n".join(sorted(bad))


def test_core_stages_never_import_experiments_or_the_lab():
    bad = [f"{m} -> {t}" for m, ts in _library_imports().items() if _part(m) in CORE
           for t in ts if _part(t) in ("experiments", "lab")]
    assert not bad, "\n".join(sorted(bad))


def test_the_lab_is_standalone():
    bad = [f"{m} -> {t}" for m, ts in _library_imports().items() if _part(m) == "lab"
           for t in ts if _part(t) != "lab"]
    assert not bad, "\n".join(sorted(bad))


def test_no_experiment_imports_another():
    bad = []
    for module, targets in _library_imports().items():
        mine = _experiment(module)
        bad += [f"{module} -> {t}" for t in targets if mine and _experiment(t) and _experiment(t) != mine]
    assert not bad, "\n".join(sorted(bad))


def test_the_checker_sees_lazy_and_relative_imports():
    src = "def f():\n    from tiedlib.experiments.exp1 import presets\n    from ..lab import build\n"
    found = _imports(ast.parse(src), "tiedlib.analysis.firing", is_package=False)
    assert found == {"tiedlib.experiments.exp1", "tiedlib.lab"}


NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _code_cells(path: Path) -> list[str]:
    return ["".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_each_notebook_imports_only_its_own_experiment(path):
    number = int(path.name[:2])
    own = {f"tiedlib.experiments.exp{number}"} if number else {"tiedlib.lab"}
    used = set()
    for src in _code_cells(path):
        clean = "\n".join(line[: len(line) - len(line.lstrip())] + "pass" if line.lstrip().startswith(("!", "%"))
                          else line for line in src.splitlines())
        used |= {m for m in _imports(ast.parse(clean), "notebook", False) if _part(m) in ("experiments", "lab")}
    stray = {m for m in used if not any(m == o or m.startswith(o + ".") for o in own)}
    assert not stray, f"{path.name} imports {sorted(stray)}; notebooks call only {sorted(own)} plus the core"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_cells_are_thin(path):
    """Cells call the library and plot: no definitions, lambdas or long cells (what a cell computed inline
    belongs in a tested function of its experiment module)."""
    problems = []
    for i, src in enumerate(_code_cells(path)):
        lines = [x for x in src.splitlines() if x.strip() and not x.lstrip().startswith("#")]
        if len(lines) > 15:
            problems.append(f"cell {i}: {len(lines)} lines")
        if re.search(r"^\s*(def|class) \w+", src, re.M) or re.search(r"\blambda\b", src):
            problems.append(f"cell {i}: defines a function or lambda")
    assert not problems, f"{path.name}: " + "; ".join(problems)

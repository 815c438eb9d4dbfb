"""Fake book builds for the tests of scripts/findings.py and scripts/compare_findings.py: what myst-nb's glue leaves
in an executed notebook and in a ``.glue.json``, and the scripts loaded as modules."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Collection
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "application/papermill.record/"


def load_script(name: str, module_name: str) -> ModuleType:
    """``scripts/<name>`` imported as ``module_name`` (registered in ``sys.modules`` while it runs: dataclasses look
    their module up there)."""
    spec = importlib.util.spec_from_file_location(module_name, ROOT / "scripts" / name)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def glue_output(key: str, value, prefix: str = PREFIX) -> dict:
    """What ``myst_nb.glue(key, value, display=False)`` leaves: a text/plain repr under papermill's mime prefix (the
    prefix is stripped in ``.glue.json``)."""
    return {"output_type": "display_data", "data": {prefix + "text/plain": repr(value)},
            "metadata": {"scrapbook": {"name": key, "mime_prefix": prefix}}}  # fmt: skip


def notebook(values: dict) -> dict:
    """An executed notebook gluing ``values``, with a printed (not glued) number beside them."""
    outputs = [glue_output(k, v) for k, v in values.items()]
    outputs.append({"output_type": "stream", "name": "stdout", "text": ["printed, not glued 0.99\n"]})
    return {"cells": [{"cell_type": "markdown", "source": "# title"},
                      {"cell_type": "code", "source": "glue(...)", "outputs": outputs}],
            "metadata": {}, "nbformat": 4, "nbformat_minor": 5}  # fmt: skip


def fake_build(root: Path, values: dict, in_notebook: Collection[str]) -> Path:
    """A fake ``root/_build``: the keys of ``in_notebook`` glued in an executed notebook, the others in myst-nb's
    ``.glue.json`` of a second notebook (which glues nothing itself). Returns the ``_build`` folder."""
    folder = root / "_build" / "jupyter_execute" / "notebooks"
    folder.mkdir(parents=True)
    (folder / "01_a.ipynb").write_text(json.dumps(notebook({k: v for k, v in values.items() if k in in_notebook})))
    glue = {k: glue_output(k, v, prefix="") for k, v in values.items() if k not in in_notebook}
    (folder / "02_b.glue.json").write_text(json.dumps(glue))
    (folder / "02_b.ipynb").write_text(json.dumps(notebook({})))
    return root / "_build"

"""Every numbered notebook executes headless at smoke scale, and the book builds from those executed copies.

The notebooks run once per session (papermill, ``SCALE="smoke"``) in a temporary working folder; the smoke book is
then built from the executed copies with execution switched off and warnings as errors, and (when Chromium is
installed) checked page by page in a headless browser.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """Execute every notebook at smoke scale; returns (folder of executed copies, {name: error or None})."""
    import papermill

    work = tmp_path_factory.mktemp("smoke_notebooks")
    errors: dict[str, BaseException | None] = {}
    for nb in NOTEBOOKS:
        try:
            papermill.execute_notebook(
                str(nb),
                str(work / nb.name),
                parameters={"SCALE": "smoke"},
                cwd=str(work),
                kernel_name="python3",
                progress_bar=False,
            )
            errors[nb.name] = None
        except Exception as err:  # noqa: BLE001 - reported per notebook below
            errors[nb.name] = err
    return work, errors


@pytest.mark.parametrize("notebook", [nb.name for nb in NOTEBOOKS])
def test_notebook_runs_at_smoke_scale(smoke_run, notebook):
    _, errors = smoke_run
    if errors[notebook] is not None:
        raise AssertionError(f"{notebook} failed at smoke scale:\n{errors[notebook]}")


def test_notebooks_are_stored_without_outputs():
    import nbformat

    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert not any(c.get("outputs") for c in code), f"{path.name} is committed with outputs"
        tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1 and "SCALE" in tagged[0].source, f"{path.name} needs one parameters cell with SCALE"


def test_smoke_book_builds_and_renders(smoke_run, tmp_path):
    work, errors = smoke_run
    book = tmp_path / "book"
    shutil.copytree(ROOT / "book", book / "book")
    shutil.copy(ROOT / "_toc.yml", book / "_toc.yml")
    config = (ROOT / "_config.yml").read_text().replace("execute_notebooks: cache", "execute_notebooks: 'off'")
    (book / "_config.yml").write_text(config)
    (book / "notebooks").mkdir()
    for nb in NOTEBOOKS:
        if errors[nb.name] is None:
            shutil.copy(work / nb.name, book / "notebooks" / nb.name)
    missing = [n for n, e in errors.items() if e is not None]
    if missing:
        pytest.skip(f"notebooks failed (reported by their own tests): {missing}")
    jb = Path(sys.executable).with_name("jupyter-book")
    result = subprocess.run(
        [str(jb), "build", str(book), "-W", "-n", "--keep-going"], capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    html = book / "_build" / "html"
    for nb in NOTEBOOKS:
        page = html / "notebooks" / (nb.stem + ".html")
        assert page.exists(), f"no page for {nb.name}"
    checker = ROOT / "scripts" / "check_book.py"
    if checker.exists() and (shutil.which("chromium") or os.environ.get("CI")):
        check = subprocess.run([sys.executable, str(checker), str(html)], capture_output=True, text=True, timeout=600)
        assert check.returncode == 0, check.stdout[-4000:] + check.stderr[-4000:]

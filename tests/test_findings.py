"""scripts/findings.py: glued values are read from executed notebooks and myst-nb's glue data, the README block is
rendered from them only, and --check fails naming the numbers that differ."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.helpers_findings import ROOT, fake_build, load_script, notebook


@pytest.fixture(scope="module")
def findings():
    return load_script("findings.py", "findings_script")


def _build(tmp_path: Path, values: dict) -> Path:
    """A fake build: half of the keys in an executed .ipynb, half in myst-nb's .glue.json."""
    keys = sorted(values)
    return fake_build(tmp_path, values, keys[: len(keys) // 2])


def _values(findings) -> dict:
    keys = {k for line in findings.LINES for k in findings._keys(line.removeprefix("?"))}
    # Three decimals after "1.": no value can contain the stale "0.92" that a test plants, however many keys exist.
    return {k: f"{k} 1.{i:03d} [1.{i:03d}, 1.{i + 1:03d}]" for i, k in enumerate(sorted(keys))}


def test_glue_is_read_from_notebooks_and_glue_json(findings, tmp_path):
    values = {"exp1_ev": "base 0.970, chat 0.968", "exp2_pair": "none passed", "lab_fingerprint": {"torch": "2.13"}}
    got = findings.build_glue(_build(tmp_path, values))
    assert got == {"exp1_ev": "base 0.970, chat 0.968", "exp2_pair": "none passed", "lab_fingerprint": "torch 2.13"}


def test_conflicting_glue_is_refused(findings, tmp_path):
    folder = tmp_path / "jupyter_execute"
    folder.mkdir()
    (folder / "a.ipynb").write_text(json.dumps(notebook({"exp1_ev": "0.1"})))
    (folder / "b.ipynb").write_text(json.dumps(notebook({"exp1_ev": "0.2"})))
    with pytest.raises(ValueError, match="exp1_ev is glued as '0.1'"):
        findings.build_glue(tmp_path)
    with pytest.raises(FileNotFoundError, match="make book"):
        findings.build_glue(tmp_path / "empty")


def test_render_needs_every_required_key_and_drops_optional_lines(findings):
    values = _values(findings)
    lines = findings.render(values)
    assert any(values["exp2_seed_cosine"] in line for line in lines)
    without_optional = {k: v for k, v in values.items() if k != "lab_fingerprint"}
    assert len(findings.render(without_optional)) == len(lines) - 1
    with pytest.raises(KeyError, match="exp3_verdict"):
        findings.render({k: v for k, v in values.items() if k != "exp3_verdict"})


def test_write_then_check_then_a_stale_number_fails(findings, tmp_path, capsys):
    values = _values(findings)
    build = _build(tmp_path, values)
    readme = tmp_path / "README.md"
    readme.write_text(f"# t\n\nintro\n\n{findings.START}\nold typed numbers 0.92\n{findings.END}\n\n## next\n")
    args = ["--build", str(build), "--readme", str(readme)]
    assert findings.main([*args, "--check"]) == 1
    assert findings.main(args) == 0
    text = readme.read_text()
    assert text.startswith("# t\n\nintro\n\n") and text.endswith(f"{findings.END}\n\n## next\n")
    assert "0.92" not in text and values["exp4_seed_chat"] in text
    assert findings.main([*args, "--check"]) == 0
    capsys.readouterr()
    readme.write_text(text.replace(values["exp1_ev"], "exp1_ev 0.43 [0.00, 0.01]"))
    assert findings.main([*args, "--check"]) == 1
    err = capsys.readouterr().err
    i = sorted(values).index("exp1_ev")
    assert f"0.43 -> 1.{i:03d}" in err and "line " in err


def test_markers_must_appear_once_in_order(findings):
    with pytest.raises(ValueError, match="exactly one"):
        findings.split_readme("no markers here")
    with pytest.raises(ValueError, match="exactly one"):
        findings.split_readme(f"{findings.END}\n{findings.START}\n")


def glued_keys(prefix: str) -> set[str]:
    """Keys starting with ``prefix`` that the Findings page pastes or the README template names (each experiment's
    test checks its ``findings()`` provides all of them, so the page and the README never ask for a missing key)."""
    module = load_script("findings.py", "findings_script_keys")
    keys = {k for line in module.LINES for k in module._keys(line.removeprefix("?"))}
    page = (ROOT / "book" / "findings.md").read_text()
    # outside code spans (the placeholders show roles as code): {glue:text}`<doc>::<key>:s`
    keys |= set(re.findall(r"(?<!`)\{glue:text\}`[^`]*::(\w+):s`", page))
    return {k for k in keys if k.startswith(prefix)}


def test_the_page_pastes_only_keys_of_the_notebook_it_names():
    page = (ROOT / "book" / "findings.md").read_text()
    pairs = re.findall(r"(?<!`)\{glue:text\}`\.\./notebooks/(\d\d)_\w+\.ipynb::(\w+):s`", page)
    assert len(pairs) > 30
    assert all(key.startswith(f"exp{int(nb)}_" if int(nb) else "lab_") for nb, key in pairs), pairs
    assert ("00", "lab_fingerprint") in pairs
    for prefix in ("exp1_", "exp2_", "exp3_", "exp4_"):
        assert glued_keys(prefix), prefix

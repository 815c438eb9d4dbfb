"""scripts/compare_findings.py: the glued findings of two (fake) builds side by side, with number-by-number
differences, "same"/"differs" for text, and a summary of what moved most."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.helpers_findings import fake_build, load_script


@pytest.fixture(scope="module")
def cf():
    yield load_script("compare_findings.py", "compare_findings_script")
    sys.modules.pop("compare_findings_script", None)


def _build(root: Path, values: dict) -> Path:
    """A fake ``_build``: the lab keys in an executed notebook, the others in myst-nb's .glue.json."""
    return fake_build(root, values, [k for k in values if k.startswith("lab_")])


A = {
    "lab_fingerprint": {"config": "tiny", "hash": "9b2fc9cc009f2cd1", "torch_version": "2.13.0+cpu", "num_threads": 2},
    "exp1_ev": "base 0.914, chat 0.891",
    "exp1_seed_l0": "-0.442 [-9.026, 8.142] (3 seeds)",
    "exp1_refusal": "triple 127: AUROC 0.58",
    "exp2_pair": "none passed",
    "exp3_verdict": "inconclusive at this scale",
    "exp4_n": "1,024 latents",
    "exp9_gone": "1.5",
}
B = {
    "lab_fingerprint": {"config": "tiny", "hash": "0123456789abcdef", "torch_version": "2.13.0+cpu", "num_threads": 2},
    "exp1_ev": "base 0.970, chat 0.891",
    "exp1_seed_l0": "0.221 [-9.026, 9.000] (3 seeds)",
    "exp1_refusal": "triple 314: AUROC 0.58",
    "exp2_pair": "no-swap 12 / half-swap 40: cosine 0.63 | both pass",
    "exp3_verdict": "inconclusive at this scale",
    "exp4_n": "1,536 latents",
    "exp9_new": "multi\nline\tvalue",
}


def _rows(cf, tmp_path) -> dict:
    rows = cf.compare(cf.glue_of(_build(tmp_path / "a", A)), cf.glue_of(_build(tmp_path / "b", B)))
    return {r.key: r for r in rows}


def test_each_key_gets_number_differences_or_same_or_differs(cf, tmp_path):
    rows = _rows(cf, tmp_path)
    assert list(rows) == sorted(set(A) | set(B))
    assert rows["exp1_ev"].difference == "0.914 → 0.970 (+0.056)"  # the unchanged chat number is not listed
    assert rows["exp1_seed_l0"].difference == "-0.442 → 0.221 (+0.663); 8.142 → 9.000 (+0.858)"
    assert rows["exp1_seed_l0"].relative == pytest.approx(0.663 / 0.442)  # |b - a| / max(|a|, |b|)
    assert rows["exp4_n"].difference == "1,024 → 1,536 (+512)"  # thousands separators: one number
    assert rows["exp1_refusal"].difference == "127 → 314" and rows["exp1_refusal"].relative == 0  # an identifier
    assert rows["exp3_verdict"].difference == "same" and not rows["exp3_verdict"].moved
    assert rows["exp2_pair"].difference == "differs" and rows["exp2_pair"].relative is None
    assert rows["lab_fingerprint"].difference == "differs"  # the hash (hex, not numbers) changed
    assert rows["exp9_gone"].difference == "only in A" and rows["exp9_gone"].b is None
    assert rows["exp9_new"].difference == "only in B" and rows["exp9_new"].a is None


def test_numbers_skip_words_hashes_and_versions(cf):
    skeleton, found = cf.numbers("L0 12.5 at exp1, hash 9b2f00, torch 2.13.0+cpu, latent 7, -3e-2 and 45%.")
    assert found == [("12.5", False), ("7", True), ("-3e-2", False), ("45", False)]
    assert skeleton == "L0 {} at exp1, hash 9b2f00, torch 2.13.0+cpu, latent {}, {} and {}%."
    assert cf.compare_values("x {0.5}", "x {0.50}") == ("same (as numbers)", 0.0, "")
    assert cf.relative_move(0.0, 0.3) == 1.0 and cf.relative_move(-0.1, 0.1) == 2.0 and cf.relative_move(0, 0) == 0


def test_main_writes_the_table_and_a_summary(cf, tmp_path, capsys):
    a, b, out = _build(tmp_path / "a", A), tmp_path / "b", tmp_path / "cmp.md"
    _build(b, B)
    assert cf.main([str(a), str(b), "--out", str(out)]) == 0  # B given as the checkout holding _build
    text = out.read_text()
    assert "| key | A | B | difference |" in text
    assert "| exp1_ev | base 0.914, chat 0.891 | base 0.970, chat 0.891 | 0.914 → 0.970 (+0.056) |" in text
    assert "cosine 0.63 \\| both pass | differs |" in text  # a | inside a value does not split the row
    assert "| exp9_new | - | multi line value | only in B |" in text  # one line per row
    summary = text.strip().splitlines()[-1]
    assert summary.startswith("6 of 7 keys glued by both builds moved (4 by their numbers, 2 as text)")
    assert "only in A: exp9_gone; only in B: exp9_new" in summary
    ranked = "exp1_seed_l0 150% (-0.442 → 0.221), exp4_n 33% (1,024 → 1,536), exp1_ev 6% (0.914 → 0.970)."
    assert summary.endswith("largest relative moves: " + ranked)  # identifiers (triple 127 -> 314) not ranked
    assert summary in capsys.readouterr().out


def test_missing_build_is_a_clear_error(cf, tmp_path, capsys):
    a = _build(tmp_path / "a", A)
    assert cf.main([str(a), str(tmp_path / "nowhere")]) == 2
    assert "no executed notebooks under" in capsys.readouterr().err

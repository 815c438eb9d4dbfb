"""Compare the glued findings of two built books: how far every number moves between builds.

Each build folder is what ``make book`` leaves in ``_build`` (the checkout holding it also works); the glued values
are read with scripts/findings.py's reader. Made for issue 17: rebuild the book on the lab pair trained with another
seed (``TIEDLIB_LAB_SEED``, see tiedlib/lab/config.py), then see which findings move::

    git clone . /tmp/seed1 && cd /tmp/seed1 && TIEDLIB_LAB_SEED=1 make book
    cd - && python scripts/compare_findings.py _build /tmp/seed1/_build --out seed_comparison.md

Build the seed in a fresh clone: in this checkout, jupyter-book's execution cache (``_build/.jupyter_cache``) and the
crosscoder runs in ``results/`` are keyed by the notebooks and their settings, not by the lab seed, so they would be
reused. ``make book``'s last step (``scripts/findings.py --check``) fails there as expected: the README holds the
default seed's numbers. The book is built before it.

Every key glued by either build gets one row: its value in A and in B, and

* ``same``: the values are equal;
* ``a → b (+d); ...``: the values are the same text around different numbers (each number that moved, with
  d = b - a);
* ``differs``: the text itself differs (e.g. a candidate passed in one build and "none passed" in the other);
* ``only in A`` / ``only in B``: one build did not glue the key.

The summary ranks keys by their largest relative move |b - a| / max(|a|, |b|) over their numbers (0 to 2: a move
from 0 counts 100%, a sign flip 200%). Numbers that name a latent or triple ("triple 127") are identifiers: shown,
not ranked.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

_spec = importlib.util.spec_from_file_location("findings", Path(__file__).with_name("findings.py"))
findings = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(findings)

# A number stands alone: not part of a word ("L0", "exp1", hex digests) nor of a version ("2.13.0"). Thousands
# separators ("1,024") are read as one number.
NUMBER = re.compile(
    r"(?<![\w.])[-+]?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?(?![\w]|\.\d)"
)
IDENTIFIER_BEFORE = re.compile(r"(?:triple|latent|index|#)\s*$", re.IGNORECASE)
"""Text right before a number that makes it an identifier (a latent index), not a measurement."""
TOP = 5
"""Keys listed in the summary's "largest relative moves"."""


@dataclass(frozen=True)
class Row:
    """One key's comparison: its values (None where a build lacks the key), the difference cell, the largest
    relative move of its measured numbers (None when the values are not comparable number by number) and that
    number's change (``"a → b"``, empty when no measured number moved)."""

    key: str
    a: str | None
    b: str | None
    difference: str
    relative: float | None
    largest: str = ""

    @property
    def moved(self) -> bool:
        return self.a is not None and self.b is not None and not self.difference.startswith("same")


def numbers(text: str) -> tuple[str, list[tuple[str, bool]]]:
    """``(skeleton, [(number, is_identifier), ...])``: ``text`` with each number replaced by ``{}``, and the numbers
    as written, in order."""
    found, parts, last = [], [], 0
    for m in NUMBER.finditer(text):
        parts.append(text[last : m.start()].replace("{", "{{").replace("}", "}}"))
        parts.append("{}")
        found.append((m.group(), bool(IDENTIFIER_BEFORE.search(text[: m.start()]))))
        last = m.end()
    parts.append(text[last:].replace("{", "{{").replace("}", "}}"))
    return "".join(parts), found


def _value(number: str) -> float:
    return float(number.replace(",", ""))


def _decimals(number: str) -> int:
    mantissa = number.replace(",", "").lower().split("e")[0]
    return len(mantissa.split(".")[1]) if "." in mantissa else 0


def relative_move(a: float, b: float) -> float:
    """|b - a| / max(|a|, |b|): 0 when equal, 1 for a move from 0, 2 for a sign flip of the same size."""
    scale = max(abs(a), abs(b))
    return abs(b - a) / scale if scale else 0.0


def compare_values(a: str, b: str) -> tuple[str, float | None, str]:
    """The difference cell for two values of one key, their largest relative move (None: not comparable) and the
    change of the number that moved most (``"a → b"``; empty when none did)."""
    if a == b:
        return "same", 0.0, ""
    skel_a, nums_a = numbers(a)
    skel_b, nums_b = numbers(b)
    if skel_a != skel_b or not nums_a:
        return "differs", None, ""
    changes, rel, largest = [], 0.0, ""
    for (x, ident), (y, _) in zip(nums_a, nums_b, strict=True):
        vx, vy = _value(x), _value(y)
        if vx == vy:
            continue
        if ident:
            changes.append(f"{x} → {y}")
            continue
        digits = max(_decimals(x), _decimals(y))
        changes.append(f"{x} → {y} ({vy - vx:+.{digits}f})")
        if relative_move(vx, vy) > rel:
            rel, largest = relative_move(vx, vy), f"{x} → {y}"
    # Equal values written differently ("0.50" vs "0.5") count as the same text around the same numbers.
    return ("; ".join(changes) if changes else "same (as numbers)"), rel, largest


def compare(a: Mapping[str, str], b: Mapping[str, str]) -> list[Row]:
    """One :class:`Row` per key glued by either build, sorted by key."""
    rows = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if va is None or vb is None:
            rows.append(Row(key, va, vb, "only in A" if vb is None else "only in B", None))
        else:
            rows.append(Row(key, va, vb, *compare_values(va, vb)))
    return rows


def summary(rows: list[Row], top: int = TOP) -> str:
    """One line: how many keys moved (by number, as text), keys only one build glued, the largest relative moves."""
    both = [r for r in rows if r.a is not None and r.b is not None]
    moved = [r for r in both if r.moved]
    numeric = [r for r in moved if r.relative is not None]
    only_a = [r.key for r in rows if r.b is None]
    only_b = [r.key for r in rows if r.a is None]
    line = (f"{len(moved)} of {len(both)} keys glued by both builds moved ({len(numeric)} by their numbers, "
            f"{len(moved) - len(numeric)} as text)")
    if only_a or only_b:
        line += f"; only in A: {', '.join(only_a) or 'none'}; only in B: {', '.join(only_b) or 'none'}"
    ranked = sorted((r for r in numeric if r.relative > 0), key=lambda r: (-r.relative, r.key))[:top]
    if ranked:
        line += "; largest relative moves: " + ", ".join(f"{r.key} {r.relative:.0%} ({r.largest})" for r in ranked)
    return line + "."


def _cell(text: str | None, width: int) -> str:
    if text is None:
        return "-"
    text = " ".join(text.split())  # one line per row: a glued table's repr is collapsed
    if len(text) > width:
        text = text[: width - 1] + "…"
    return text.replace("|", "\\|")


def markdown(rows: list[Row], label_a: str, label_b: str, *, width: int = 100) -> str:
    """The comparison as markdown: a header naming the builds, the table, and :func:`summary`."""
    lines = [f"# Findings: A = `{label_a}`, B = `{label_b}`", "",
             "Generated by `scripts/compare_findings.py`; differences are B - A.", "",
             "| key | A | B | difference |", "| --- | --- | --- | --- |"]  # fmt: skip
    for r in rows:
        lines.append(f"| {r.key} | {_cell(r.a, width)} | {_cell(r.b, width)} | {_cell(r.difference, 10 * width)} |")
    lines += ["", summary(rows)]
    return "\n".join(lines) + "\n"


def glue_of(build: Path) -> dict[str, str]:
    """Glued values of a build folder (``_build``), or of a checkout holding one."""
    if not (build / "jupyter_execute").exists() and (build / "_build" / "jupyter_execute").exists():
        build = build / "_build"
    return findings.build_glue(build)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", type=Path, help="first build folder (A), e.g. _build")
    parser.add_argument("b", type=Path, help="second build folder (B), e.g. /tmp/seed1/_build")
    parser.add_argument("--out", type=Path, help="write the markdown here (printed otherwise)")
    parser.add_argument("--width", type=int, default=100, help="longest value shown in a cell (characters)")
    args = parser.parse_args(argv)
    try:
        a, b = glue_of(args.a), glue_of(args.b)
    except (FileNotFoundError, ValueError) as e:
        print(f"compare_findings: {e}", file=sys.stderr)
        return 2
    rows = compare(a, b)
    text = markdown(rows, str(args.a), str(args.b), width=args.width)
    if args.out is None:
        print(text, end="")
    else:
        args.out.write_text(text)
        print(f"{args.out}: {summary(rows)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

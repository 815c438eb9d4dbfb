"""Per-experiment settings for each scale, as plain data.

Each experiment module here defines a dataclass of settings and a table ``{scale: settings}``. Notebooks call
``pick(TABLE, SCALE, **overrides)``; nothing else in tiedlib branches on the scale.
"""

from __future__ import annotations

import dataclasses
from typing import Literal, TypeVar

Scale = Literal["smoke", "tiny", "paper"]
SCALES: tuple[str, ...] = ("smoke", "tiny", "paper")
T = TypeVar("T")


def pick(table: dict[str, T], scale: str, **overrides) -> T:
    """The settings of ``scale`` from ``table``, with single fields replaced by ``overrides``.

    Raises a ValueError naming the valid scales, or the valid fields when an override is unknown.
    """
    if scale not in table:
        raise ValueError(f"unknown scale {scale!r}; choose one of {sorted(table)}")
    settings = table[scale]
    fields = {f.name for f in dataclasses.fields(settings)}  # type: ignore[arg-type]
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown setting(s) {unknown}; valid settings are {sorted(fields)}")
    return dataclasses.replace(settings, **overrides)  # type: ignore[type-var]

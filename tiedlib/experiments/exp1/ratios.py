"""The write-up's Figure 2: firing-count ratios per latent triple and the triples in its two corners.

A triple is a corner only if its exclusive part on that side fires often enough (``min_exclusive_firings``, issue 16):
a part that fired three times has a ratio, not a reading.
"""

from __future__ import annotations

from dataclasses import dataclass

from tiedlib.analysis.firing import Corners, FiringCounts, FiringRatios, firing_ratios, select_corners
from tiedlib.config import BASE_ONLY, CHAT_ONLY
from tiedlib.experiments.exp1.presets import Exp1Settings


@dataclass
class RatioScatter:
    """Firing counts of a tied crosscoder, their base/shared and chat/shared ratios, and the corner triples."""

    firing: FiringCounts
    """Counts of shape ``(3, n_latents)`` (shared, base, chat) over ``firing.n_tokens`` tokens."""
    ratios: FiringRatios
    corners: Corners

    @property
    def n_kept(self) -> int:
        """Triples firing often enough to be kept (``min_frequency``)."""
        return int(self.ratios.kept.sum())

    @property
    def n_rare(self) -> int:
        """Triples dropped by the frequency filter."""
        return int((~self.ratios.kept).sum())

    @property
    def n_never_shared(self) -> int:
        """Kept triples whose shared latent never fires (their ratios are not numbers, so they are not plotted)."""
        return int((self.ratios.kept & self.ratios.zero_shared).sum())

    @property
    def n_plotted(self) -> int:
        """Kept triples with two finite ratios (the points of the scatter)."""
        return int(self.ratios.finite.sum())

    @property
    def most_top_left(self) -> int:
        if self.corners.top_left.numel() == 0:
            raise ValueError("no triple has finite ratios, so the scatter has no corners")
        return int(self.corners.top_left[0])

    @property
    def most_bottom_right(self) -> int:
        if self.corners.bottom_right.numel() == 0:
            raise ValueError("no triple has finite ratios, so the scatter has no corners")
        return int(self.corners.bottom_right[0])

    @property
    def extremes(self) -> list[int]:
        """The most top-left and the most bottom-right triple, leaving out a corner that no triple qualifies for."""
        return [int(c[0]) for c in (self.corners.top_left, self.corners.bottom_right) if c.numel()]

    def summary(self) -> str:
        """The corner triples (best first) and how many triples were kept, dropped and never shared."""
        return "\n".join([
            f"top-left: {self.corners.top_left.tolist()}",
            f"bottom-right: {self.corners.bottom_right.tolist()}",
            f"{self.n_kept} triples kept, {self.n_rare} rare, {self.n_never_shared} kept but never firing in the "
            "shared group",
        ])  # fmt: skip

    def browser_latents(self, focus: int) -> list[int]:
        """The latent browser's shortlist: the focus triple, then the top-left and the bottom-right triples."""
        return [focus, *self.corners.top_left.tolist(), *self.corners.bottom_right.tolist()]


def floor_corners(ratios: FiringRatios, firing: FiringCounts, k: int, min_firings: int) -> Corners:
    """The ``k`` most top-left triples among those whose chat part fires on at least ``min_firings`` tokens and lies
    above the diagonal (chat/shared > base/shared); the ``k`` most bottom-right among those whose base part does and
    lies below it (a triple on the diagonal is in neither). Kept triples with finite ratios only, as
    :func:`tiedlib.analysis.firing.select_corners`."""
    c = firing.counts
    above, below = ratios.chat_over_shared > ratios.base_over_shared, ratios.base_over_shared > ratios.chat_over_shared
    top = ratios._replace(kept=ratios.kept & (c[CHAT_ONLY] >= min_firings) & above)
    bottom = ratios._replace(kept=ratios.kept & (c[BASE_ONLY] >= min_firings) & below)
    return Corners(select_corners(top, k).top_left, select_corners(bottom, k).bottom_right)


def ratio_scatter(firing: FiringCounts, settings: Exp1Settings) -> RatioScatter:
    """Ratios with the settings' frequency filter and the ``n_corner`` most top-left / bottom-right triples that have
    at least ``min_exclusive_firings`` firings of their chat (top-left) or base (bottom-right) part."""
    ratios = firing_ratios(firing, min_frequency=settings.min_frequency)
    return RatioScatter(firing, ratios, floor_corners(ratios, firing, settings.n_corner,
                                                      settings.min_exclusive_firings))  # fmt: skip

"""Experiment 2's report: the closing summary, the blue/green pair (reported only when both latents pass the test),
the pair over seeds with a 95% interval, and the headline numbers keyed ``exp2_*`` that the notebook glues for the
book's Findings page and the README."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor

from tiedlib.activations.collect import PairActivations
from tiedlib.analysis.cosines import max_cosine
from tiedlib.analysis.stats import INCONCLUSIVE, Interval, t_interval, verdict
from tiedlib.config import BASE, CHAT

from .latents import CategoryColourLatents, colour_latents_by_category, final_metrics, fit_summary, train
from .presets import Exp2Settings
from .tied import TiedColourTriple
from .toy import HeldOutChoice

SEEDS: dict[str, tuple[int, ...]] = {"smoke": (0, 1), "tiny": (0, 1, 2), "paper": (0,)}
"""Seeds of the (no-swap, half-swap) standard crosscoder (initialisation and batch order) per scale; the headline run
is the one of ``settings.seed``. Smoke keeps the test suite fast; at paper scale each seed is a 60M-token GPU run, so
only the headline one is trained (one seed: no interval, so no conclusion)."""
COSINE_NULL = 0.5
"""Pair cosine the seed interval is tested against: half-way between unrelated (0) and identical (1) directions."""


def summary(
    settings: Exp2Settings, *, layer: int, n_entries: int, choice: HeldOutChoice,
    no_swap_half_swap: CategoryColourLatents, base_half_swap: CategoryColourLatents, tied: TiedColourTriple, scale: str,
    rec_tied: TiedColourTriple | None = None,
) -> str:
    """Five lines (six with ``rec_tied``): the setup, the fine-tunes' colour choice, the two standard crosscoders, the
    write-up's tied one and the recommended tied one.

    Args:
        settings: the notebook's settings.
        layer: harvested layer.
        n_entries: crosscoder training entries (prefix + colour).
        choice: colour choice on held-out prefixes (needs ``"base"``, ``"no-swap"`` and ``"half-swap"``).
        no_swap_half_swap: blue/green latents of the (no-swap, half-swap) standard crosscoder.
        base_half_swap: those of the (base, half-swap) one, shared latents ranked (``shared=True``).
        tied: the write-up's tied crosscoder's blue/green triple.
        scale: the notebook's ``SCALE``.
        rec_tied: the recommended tied crosscoder's (``train(..., "recommended")``), when trained.
    """
    toy, c, ns, b = settings.toy, choice.by_model, no_swap_half_swap, base_half_swap
    pair, partner = passing_pair(ns), shared_partner(b)
    return "\n".join([
        f"Scale: {scale} (base model of the {toy.pair} pair, layer {layer}; {toy.n_finetune_per_colour} + "
        f"{toy.n_finetune_per_colour} fine-tuning prefixes, crosscoders on {n_entries} entries repeated to "
        f"{settings.train_tokens:,} tokens, {settings.n_latents} latents).",
        f"Fine-tuning: P(true colour) on held-out prefixes: base {c['base']['p_true']:.2f}, no-swap "
        f"{c['no-swap']['p_true']:.2f}, half-swap {c['half-swap']['p_true']:.2f} (other colour "
        f"{c['half-swap']['p_other']:.2f}).",
        f"({ns.names[0]}, {ns.names[1]}) standard crosscoder: {len(ns.categories.base_exclusive)} "
        f"{ns.names[0]}-exclusive and {len(ns.categories.chat_exclusive)} {ns.names[1]}-exclusive latents; blue/green "
        f"among them (both colours in the top {ns.top_k} logits): {len(ns.hits('base'))} and {len(ns.hits('chat'))}. "
        + (f"Best candidates {pair[0]} and {pair[1]}: decoder cosine {pair[2]:.3f} (write-up: 0.97)." if pair
           else "No blue/green pair: no candidate is reported unless it passes the test."),
        f"({b.names[0]}, {b.names[1]}) standard crosscoder: blue/green {b.names[0]}-exclusive latents "
        f"{len(b.hits('base'))}, {b.names[1]}-exclusive {len(b.hits('chat'))}; "
        + (f"the best {b.names[1]}-exclusive candidate's closest shared latent is at cosine {partner[2]:.3f} "
           f"(write-up: 0.91), blue/green itself: {partner[3]}." if partner and partner[1] is not None
           else f"{partner_report(b)}."),
        *(_tied_line(label, t) for label, t in (("Tied crosscoder", tied),
                                                ("Recommended tied crosscoder (written penalty, eta 1.5)", rec_tied))
          if t is not None),
    ])


def _tied_line(label: str, tied: TiedColourTriple) -> str:
    return (f"{label} on ({tied.names[0]}, {tied.names[1]}): blue/green on the {tied.names[0]} half at "
            f"{len(tied.hits_base)} indices, on the {tied.names[1]} half at {len(tied.hits_chat)}, on both at "
            f"{len(tied.both)}; one tied triple for blue/green: {tied.single_triple}.")


TIED_LABELS = {"tied": "write-up tied (eta 2)", "recommended": "recommended tied (written, eta 1.5)"}
"""Row names of :func:`tied_table` per architecture of :func:`~.latents.train`."""


def tied_table(runs: dict[str, tuple[TiedColourTriple, Sequence[dict]]]) -> pd.DataFrame:
    """Side by side, one row per tied crosscoder (``{label: (triple, logged metrics)}``): fit (explained variance, L0
    of the last logged step), how many indices pass the blue/green test on each decoder half and on both, whether
    blue/green is one triple, and the firing on colour tokens of each group of the inspected (passing) triple (NaN
    when no index passes)."""
    rows = {}
    for label, (t, metrics) in runs.items():
        fit = final_metrics(metrics)
        firing = t.firing["colour tokens"] if t.firing is not None else [math.nan] * 3
        rows[label] = {"explained variance": fit.get("explained_variance", math.nan), "L0": fit.get("l0", math.nan),
                       f"{t.names[0]} half passes": len(t.hits_base), f"{t.names[1]} half passes": len(t.hits_chat),
                       "both halves pass": len(t.both), "one triple": t.single_triple,
                       "triple": -1 if t.triple is None else t.triple,
                       **{f"{g} on colour tokens": round(float(v), 3) for g, v in
                          zip(("shared", f"{t.names[0]} only", f"{t.names[1]} only"), firing, strict=True)}}
    return pd.DataFrame(rows).T.rename_axis("crosscoder")


def passing_counts(no_swap_half_swap: CategoryColourLatents, base_half_swap: CategoryColourLatents,
                   tied: TiedColourTriple, rec_tied: TiedColourTriple | None = None) -> str:
    """How many latents pass the blue/green test, per crosscoder: exclusive latents of each standard crosscoder (of
    how many), indices of each tied one (on either decoder half)."""
    parts = []
    for found in (no_swap_half_swap, base_half_swap):
        (n0, n1), cats = found.names, found.categories
        parts.append(f"standard ({n0}, {n1}): {len(found.hits('base'))} of {len(cats.base_exclusive)} {n0}-exclusive, "
                     f"{len(found.hits('chat'))} of {len(cats.chat_exclusive)} {n1}-exclusive")
    for label, t in (("write-up tied", tied), ("recommended tied", rec_tied)):
        if t is not None:
            parts.append(f"{label}: {t.passing_text()}")
    return "; ".join(parts)


def shared_partner(found: CategoryColourLatents) -> tuple[int, int | None, float, bool | None] | None:
    """The best *passing* chat-exclusive blue/green latent, the shared latent whose chat decoder half is closest to its
    chat half, that cosine (write-up 0.91) and whether the partner is itself blue/green (None when the shared latents
    were not ranked: ``shared=True``). None when no chat-exclusive latent passes; ``(latent, None, nan, None)`` when
    there is no shared latent."""
    hits = found.hits("chat")
    if not hits:
        return None
    shared = found.categories.shared
    if not len(shared):
        return hits[0], None, float("nan"), None
    closest = max_cosine(found.W_dec[[hits[0]], CHAT], found.W_dec[shared, CHAT])
    idx = int(shared[closest.indices[0]])
    return hits[0], idx, float(closest.values[0]), None if found.shared is None else idx in found.hits("shared")


def partner_report(found: CategoryColourLatents) -> str:
    """:func:`shared_partner` as text, or that no chat-exclusive latent passed (then there is no partner to report)."""
    partner = shared_partner(found)
    if partner is None:
        return f"no {found.names[1]}-exclusive latent passes the blue/green test, so there is no partner to measure"
    latent, idx, cos, colour = partner
    if idx is None:
        return f"blue/green {found.names[1]}-exclusive latent {latent}, but no shared latent to compare it with"
    colour_text = "n/a" if colour is None else "yes" if colour else "no"
    return (f"blue/green {found.names[1]}-exclusive latent {latent}: closest shared latent {idx} at cosine {cos:.3f} "
            f"(write-up: 0.91), itself blue/green: {colour_text}")


def passing_pair(found: CategoryColourLatents) -> tuple[int, int, float] | None:
    """The best base-exclusive and the best chat-exclusive latent that *pass* the blue/green test (both colours in
    the top ``top_k`` positive logits), and the cosine of the base decoder half of the first with the chat decoder
    half of the second; None when either category has no passing latent (a best-ranked candidate that fails the test
    is no blue/green latent, so it is never reported as one)."""
    base, chat = found.hits("base"), found.hits("chat")
    if not base or not chat:
        return None
    cos = torch.nn.functional.cosine_similarity(found.W_dec[base[0], BASE], found.W_dec[chat[0], CHAT], dim=0)
    return base[0], chat[0], float(cos)


def pair_report(found: CategoryColourLatents) -> str:
    """The passing blue/green pair and its decoder cosine, or that none passed (with the best-ranked candidates'
    worse-colour ranks, so a reader sees how far they were)."""
    n0, n1 = found.names
    pair = passing_pair(found)
    if pair is not None:
        return (f"blue/green pair: {n0}-exclusive latent {pair[0]} and {n1}-exclusive latent {pair[1]}, decoder cosine "
                f"{pair[2]:.3f} (write-up: 0.97)")  # fmt: skip
    cats = found.categories
    return (f"no blue/green pair: {len(found.hits('base'))} of {len(cats.base_exclusive)} {n0}-exclusive and "
            f"{len(found.hits('chat'))} of {len(cats.chat_exclusive)} {n1}-exclusive latents pass the test (top "
            f"{found.top_k}); the best-ranked candidates have their worse colour at rank {found.best_rank('base')} and "
            f"{found.best_rank('chat')}")  # fmt: skip


@dataclass
class ColourSeeds:
    """The (no-swap, half-swap) standard crosscoder's blue/green latents, one crosscoder per seed."""

    seeds: list[int]
    runs: list[CategoryColourLatents]

    @property
    def n_pairs(self) -> int:
        """Seeds whose crosscoder has a passing blue/green pair (:func:`passing_pair`)."""
        return sum(passing_pair(r) is not None for r in self.runs)

    def hits(self, which: str) -> Interval:
        """Per-seed number of passing blue/green latents among the ``which`` (``"base"``/``"chat"``)-exclusive ones."""
        return t_interval([float(len(r.hits(which))) for r in self.runs])

    def pair_cosine(self) -> Interval | None:
        """Decoder cosine of the passing pair, over the seeds that have one (None when no seed has)."""
        values = [p[2] for p in (passing_pair(r) for r in self.runs) if p is not None]
        return t_interval(values) if values else None

    def cosine_verdict(self, null: float = COSINE_NULL) -> str:
        """Whether passing pairs are near-duplicates (cosine above ``null``), only where the interval says so, and
        over how many of the seeds (only seeds with a passing pair have a pair cosine)."""
        cos = self.pair_cosine()
        if cos is None:
            return f"no seed has a blue/green pair: {INCONCLUSIVE}"
        said = verdict(cos, null, above=f"the exclusive blue/green pair is closer than cosine {null}",
                       below=f"the exclusive blue/green pair is further than cosine {null}")  # fmt: skip
        # The interval is over the seeds that have a pair only: say how many that is.
        return f"{said} (over the {self.n_pairs} of {len(self.seeds)} seeds with a pair)"

    def summary(self) -> str:
        """What passed per seed, the pair cosine interval and its verdict."""
        n0, n1 = self.runs[0].names
        cos = self.pair_cosine()
        return (f"{len(self.seeds)} seeds {self.seeds}: passing blue/green pair in {self.n_pairs}; passing "
                f"{n0}-exclusive latents {self.hits('base').text(1)}, {n1}-exclusive {self.hits('chat').text(1)}; "
                f"pair cosine {cos.text() if cos is not None else 'n/a'} -> {self.cosine_verdict()}")  # fmt: skip


def colour_seed_runs(settings: Exp2Settings, run_dir: str | Path, acts: PairActivations, W_U: dict[str, Tensor],
                     names: tuple[str, str], colour_ids: dict[str, int], *, seeds: Sequence[int] = SEEDS["tiny"],
                     first: CategoryColourLatents | None = None, source: str | None = None) -> ColourSeeds:  # fmt: skip
    """Train (or load) one standard crosscoder on ``acts`` per seed of ``seeds`` (initialisation and batch
    order) into ``run_dir/seed<k>`` and find its blue/green latents by category.

    ``first``: the notebook's headline crosscoder's result, used for ``settings.seed`` instead of training it again.
    ``source``: the activations' pair fingerprint, recorded in and checked against each run folder (see
    :func:`tiedlib.training.train_or_load`).
    """
    runs = []
    if not seeds:
        raise ValueError("no seeds given")
    for seed in seeds:
        if first is not None and seed == settings.seed:
            runs.append(first)
            continue
        cc, _ = train(replace(settings, seed=seed), Path(run_dir) / f"seed{seed}", acts, "standard", source=source)
        runs.append(colour_latents_by_category(cc, W_U, names, colour_ids, top_k=settings.top_k))
    return ColourSeeds(list(seeds), runs)


def findings(settings: Exp2Settings, *, scale: str, choice: HeldOutChoice, no_swap_half_swap: CategoryColourLatents,
             base_half_swap: CategoryColourLatents, tied: TiedColourTriple, seeds: ColourSeeds,
             rec_tied: TiedColourTriple | None = None, fits: dict[str, Sequence[dict]] | None = None,
             ) -> dict[str, str]:  # fmt: skip
    """Every headline number of notebook 02, formatted, under a stable ``exp2_*`` key (arguments as in
    :func:`summary`; ``seeds`` from :func:`colour_seed_runs`; ``fits``: logged metrics of the ``"tied"`` and
    ``"recommended"`` crosscoders, for their fit)."""
    c, ns, b = choice.by_model, no_swap_half_swap, base_half_swap
    pair = passing_pair(ns)
    cos = seeds.pair_cosine()
    return {
        "exp2_setup": f"{scale} scale, {settings.n_latents} latents, {settings.n_steps} steps per crosscoder",
        "exp2_p_true": f"base {c['base']['p_true']:.2f}, no-swap {c['no-swap']['p_true']:.2f}, half-swap "
                       f"{c['half-swap']['p_true']:.2f} (other colour {c['half-swap']['p_other']:.2f})",
        "exp2_hits": f"{len(ns.hits('base'))} of {len(ns.categories.base_exclusive)} {ns.names[0]}-exclusive, "
                     f"{len(ns.hits('chat'))} of {len(ns.categories.chat_exclusive)} {ns.names[1]}-exclusive",
        "exp2_pair": "none passed" if pair is None else f"latents {pair[0]} and {pair[1]}, cosine {pair[2]:.3f}",
        "exp2_partner": partner_report(b),
        "exp2_tied": _tied_text(tied),
        "exp2_seeds": f"{len(seeds.seeds)} seeds x {settings.n_steps} steps",
        "exp2_seed_pairs": f"{seeds.n_pairs} of {len(seeds.seeds)} seeds",
        "exp2_seed_hits": f"{ns.names[0]}-exclusive {seeds.hits('base').text(1)}, {ns.names[1]}-exclusive "
                          f"{seeds.hits('chat').text(1)}",
        "exp2_seed_cosine": cos.text() if cos is not None else "n/a (no seed has a passing pair)",
        "exp2_seed_verdict": seeds.cosine_verdict(),
        "exp2_passing": passing_counts(ns, b, tied, rec_tied),
        "exp2_tied_triple": tied.firing_text(),
        "exp2_rec_tied": "not trained" if rec_tied is None else _tied_text(rec_tied),
        "exp2_rec_passing": "not trained" if rec_tied is None else rec_tied.passing_text(),
        "exp2_rec_triple": "not trained" if rec_tied is None else rec_tied.firing_text(),
        "exp2_tied_fit": _fit_text((fits or {}).get("tied")),
        "exp2_rec_fit": _fit_text((fits or {}).get("recommended")),
    }  # fmt: skip


def _tied_text(tied: TiedColourTriple) -> str:
    return (f"{'yes' if tied.single_triple else 'no'} ({tied.names[0]} half blue/green at {len(tied.hits_base)} "
            f"indices, {tied.names[1]} half at {len(tied.hits_chat)}, both at {len(tied.both)})")


def _fit_text(metrics: Sequence[dict] | None) -> str:
    return fit_summary(metrics) if metrics else "no training log"

"""Issue 16's positive control: a concept planted at different times in the two models, where the answer is known.

A unit direction ``d`` is added to the *base* activations at the positions of a set A and to the *chat* activations
at those of a set B, where A and B differ but overlap (the write-up's mechanism: one concept that the two models fire
at different times). A standard crosscoder should then write ``d`` with an exclusive pair (a base-only latent and a
chat-only latent, both decoders along ``d``); a tied crosscoder with one triple whose base part fires on A \\ B, chat
part on B \\ A and shared part on A & B.

* :mod:`.planting`: the planted positions, direction and rows (:class:`ControlData`), re-exported here.
* :func:`train_control_crosscoders`: the standard crosscoder, the write-up's tied one and the recommended tied one.
* :func:`match_standard`, :func:`match_tied`, :func:`unit_firing`: the measurements; :func:`measure_control` puts
  them into a :class:`ControlResult` (a table, a verdict and the numbers the book glues).
* :func:`run_control`: plant, train and measure once per seed (:class:`ControlRun`: pass counts over seeds).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from tiedlib.config import BASE, BASE_ONLY, CHAT, CHAT_ONLY, SHARED, TrainConfig
from tiedlib.crosscoders.crosscoder import recommended_tied
from tiedlib.experiments.exp5.planting import (
    SETS,
    ControlData,
    PlantedSets,
    control_data,
    inject,
    pair_control_rows,
    planted_direction,
    planted_sets,
)
from tiedlib.experiments.exp5.presets import ControlSettings
from tiedlib.experiments.exp5.tying_lab import variant_config
from tiedlib.training import train_or_load

MODELS = {"standard": "standard", "tied (write-up)": "tied", "tied (recommended)": "recommended"}
"""Label -> what is trained: a :data:`~.tying.VARIANTS` key, or ``"recommended"`` (:func:`recommended_tied`)."""


# ---- training ------------------------------------------------------------------------------------------------------
def control_configs(d_model: int, cs: ControlSettings) -> dict[str, Any]:
    """Label of :data:`MODELS` -> :class:`CrosscoderConfig` (``cs.n_latents`` latents or triples)."""
    out = {}
    for label, name in MODELS.items():
        if name == "recommended":
            out[label] = recommended_tied(d_model, cs.n_latents).cfg
        else:
            out[label] = variant_config(name, d_model, cs.n_latents, eta=cs.eta)
    return out


def control_key(cs: ControlSettings) -> str:
    """Eight hex digits naming every field of ``cs`` but ``seeds`` (the control's run folder is ``control-<key>``)."""
    fields = {k: v for k, v in asdict(cs).items() if k != "seeds"}
    return hashlib.sha1(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:8]


def train_control_crosscoders(data: ControlData, cs: ControlSettings, results: str | Path, *, device: str = "cpu",
                              log_every: int = 100) -> dict[str, Any]:  # fmt: skip
    """Train (or load) the three crosscoders of :data:`MODELS` on ``data`` in ``results/control-<hash>/<name>/``,
    the hash naming the planting settings so that a changed control never loads an old run, and ``data.source`` (the
    pair the rows came from) recorded and checked in each folder. Returns label -> model (eval mode)."""
    tcfg = TrainConfig(n_steps=cs.n_steps, lr=cs.lr, l1_coeff=cs.l1_coeff, seed=cs.seed, device=device,
                       log_every=log_every, progress=False)  # fmt: skip
    models = {}
    for label, cfg in control_configs(data.rows.shape[-1], cs).items():
        run_dir = Path(results) / f"control-{control_key(cs)}" / MODELS[label]
        models[label], _ = train_or_load(run_dir, cfg, tcfg, data.make_data(cs.batch_size, seed=cs.seed),
                                         source=data.source)  # fmt: skip
        models[label].eval()
    return models


# ---- measurement ---------------------------------------------------------------------------------------------------
def _cos(W: Float[Tensor, "n d_model"], direction: Float[Tensor, " d_model"]) -> Float[Tensor, " n"]:
    return F.cosine_similarity(W.detach().float().cpu(), direction.float().cpu()[None, :], dim=-1)


def match_standard(W_dec: Float[Tensor, "n_latents 2 d_model"], direction: Float[Tensor, " d_model"], *,
                   threshold: float = 0.9, exclusive_below: float = 0.3) -> dict[str, Any]:  # fmt: skip
    """The standard crosscoder's best latents for ``direction``.

    A latent is *base-exclusive* when its chat decoder norm is under ``exclusive_below`` times its base one (and the
    mirror image); the others are *shared*. Returns ``base_latent`` / ``chat_latent``: the exclusive latent whose own
    half has the highest cosine with ``direction`` (None if no exclusive latent), ``base_cos`` / ``chat_cos`` (NaN if
    none), ``pair_cos`` (cosine of the two exclusive halves), ``shared_latent`` and ``shared_cos`` (the shared
    latent whose worse half is best aligned), and ``exclusive_pair``: both exclusive cosines above ``threshold``.
    """
    W = W_dec.detach().float().cpu()
    norms = W.norm(dim=-1)  # (n, 2)
    cos = torch.stack([_cos(W[:, BASE], direction), _cos(W[:, CHAT], direction)], dim=1)  # (n, 2)
    base_excl = norms[:, CHAT] < exclusive_below * norms[:, BASE]
    chat_excl = norms[:, BASE] < exclusive_below * norms[:, CHAT]
    out: dict[str, Any] = {}
    for side, m, mask in (("base", BASE, base_excl), ("chat", CHAT, chat_excl)):
        score = torch.where(mask, cos[:, m], torch.full_like(cos[:, m], -math.inf))
        i = int(score.argmax())
        out[f"{side}_latent"] = i if mask[i] else None
        out[f"{side}_cos"] = float(cos[i, m]) if mask[i] else math.nan
    shared = ~(base_excl | chat_excl)
    worse = torch.where(shared, cos.min(dim=1).values, torch.full_like(cos[:, 0], -math.inf))
    j = int(worse.argmax())
    out["shared_latent"] = j if shared[j] else None
    out["shared_cos"] = float(worse[j]) if shared[j] else math.nan
    b, c = out["base_latent"], out["chat_latent"]
    out["pair_cos"] = math.nan if b is None or c is None else float(_cos(W[b, BASE][None], W[c, CHAT])[0])
    out["exclusive_pair"] = bool(out["base_cos"] > threshold and out["chat_cos"] > threshold)
    return out


def match_tied(W_dec: Float[Tensor, "n_latents 2 d_model"], direction: Float[Tensor, " d_model"], *,
               threshold: float = 0.9) -> dict[str, Any]:  # fmt: skip
    """The tied crosscoder's best triple for ``direction``: the index whose worse decoder half is best aligned.

    Returns ``triple``, ``base_cos``, ``chat_cos`` (its halves' cosines with ``direction``), ``aligned`` and
    ``n_aligned`` (the indices with *either* half above ``threshold``, and how many) and ``single``: both halves of
    the best triple above ``threshold`` and no other index with a half above it (``d`` is captured by one triple).
    """
    W = W_dec.detach().float().cpu()
    cos = torch.stack([_cos(W[:, BASE], direction), _cos(W[:, CHAT], direction)], dim=1)  # (n, 2)
    i = int(cos.min(dim=1).values.argmax())
    aligned = (cos.max(dim=1).values > threshold).nonzero().squeeze(1).tolist()
    return {"triple": i, "base_cos": float(cos[i, BASE]), "chat_cos": float(cos[i, CHAT]), "aligned": aligned,
            "n_aligned": len(aligned), "single": bool(cos[i].min() > threshold and len(aligned) == 1)}  # fmt: skip


@torch.no_grad()
def unit_firing(model: Any, rows: Float[Tensor, "n_tokens 2 d_model"], planted: PlantedSets,
                units: dict[str, tuple[int | None, int]], *,
                chunk: int = 4096) -> dict[str, dict[str, float]]:  # fmt: skip
    """How often, and how strongly, each unit fires on each of :data:`SETS`.

    ``units``: name -> ``(group, index)``, group None for a standard crosscoder's latent, else ``SHARED``,
    ``BASE_ONLY`` or ``CHAT_ONLY`` of a tied triple. Returns name -> ``{<set>: firing count, "total": count,
    "mass <set>": summed activation, "mass total": summed activation}``.
    """
    masks = {name: m.cpu() for name, m in planted.masks().items()}
    keys = [*SETS, "total"]
    out = {u: {**dict.fromkeys(keys, 0), **dict.fromkeys([f"mass {k}" for k in keys], 0.0)} for u in units}
    device = next(model.parameters()).device
    for s in range(0, rows.shape[0], chunk):
        f = model.encode(rows[s : s + chunk].to(device)).float().cpu()
        for u, (group, index) in units.items():
            act = f[:, index] if group is None else f[:, group, index]
            fires = act > 0
            for name, m in [*masks.items(), ("total", torch.ones_like(fires))]:
                sel = m[s : s + chunk] if name != "total" else m
                out[u][name] += int((fires & sel).sum())
                out[u][f"mass {name}"] += float(act[sel].sum())
    return out


TARGETS = {"standard": {"base-exclusive": ("A",), "chat-exclusive": ("B",), "shared": ("A & B",)},
           "tied": {"shared": ("A & B",), "base": ("A only",), "chat": ("B only",)}}  # fmt: skip
"""Where each unit should fire: a standard exclusive latent wherever its model carries ``d`` (A or B), its shared
latent (if any) on A & B; a tied triple's base part on A \\ B, chat part on B \\ A, shared part on A & B."""


def _on_target(counts: dict[str, float], target: str, prefix: str = "") -> float:
    parts = {"A": ("A only", "A & B"), "B": ("B only", "A & B")}.get(target, (target,))
    return sum(counts[prefix + p] for p in parts)


@dataclass
class ControlResult:
    """The positive control's measurements: per crosscoder its match for ``d`` and its units' firings."""

    sizes: dict[str, int | float]
    matches: dict[str, dict[str, Any]]
    """Label -> :func:`match_standard` or :func:`match_tied`."""
    firing: dict[str, dict[str, dict[str, float]]]
    """Label -> unit -> :func:`unit_firing` counts."""
    threshold: float

    def table(self) -> pd.DataFrame:
        """One row per (crosscoder, unit): index, decoder cosines with ``d``, firing counts on each set, the target
        set (:data:`TARGETS`), precision (share of the unit's firings inside it), recall (share of it the unit fires
        on) and mass precision (share of the unit's summed activation inside it: low-level firings elsewhere count
        little)."""
        out = []
        for label, units in self.firing.items():
            m, kind = self.matches[label], "standard" if "exclusive_pair" in self.matches[label] else "tied"
            for unit, counts in units.items():
                (target,) = TARGETS[kind][unit]
                hits, size = _on_target(counts, target), int(self.sizes[target])
                mass = counts["mass total"]
                mass_on = _on_target(counts, target, "mass ")
                index = m[f"{unit.split('-')[0]}_latent"] if kind == "standard" else m["triple"]
                out.append({"crosscoder": label, "unit": unit, "index": index, **self._cosines(m, kind, unit),
                            **{s: counts[s] for s in SETS}, "target": target,
                            "precision": hits / counts["total"] if counts["total"] else math.nan,
                            "recall": hits / size if size else math.nan,
                            "mass precision": mass_on / mass if mass else math.nan})  # fmt: skip
        return pd.DataFrame(out)

    def firing_fractions(self) -> pd.DataFrame:
        """Long table for :func:`~.figures.control_firing_bars`: ``crosscoder``, ``unit``, ``set`` (:data:`SETS`),
        ``fraction`` (of the set's positions on which the unit fires)."""
        return pd.DataFrame([{"crosscoder": label, "unit": unit, "set": s,
                              "fraction": counts[s] / self.sizes[s] if self.sizes[s] else math.nan}
                             for label, units in self.firing.items() for unit, counts in units.items()
                             for s in SETS])  # fmt: skip

    @staticmethod
    def _cosines(m: dict[str, Any], kind: str, unit: str) -> dict[str, float]:
        if kind == "tied":
            return {"cos base": m["base_cos"], "cos chat": m["chat_cos"]}
        side = unit.split("-")[0]
        if side == "shared":
            return {"cos base": m["shared_cos"], "cos chat": m["shared_cos"]}
        return {"cos base": m["base_cos"] if side == "base" else math.nan,
                "cos chat": m["chat_cos"] if side == "chat" else math.nan}  # fmt: skip

    def verdict(self) -> str:
        """One clause per crosscoder: exclusive pair or not (standard); single triple or not, and the recall of its
        parts on their target sets (tied)."""
        parts = []
        recall = self.table().set_index(["crosscoder", "unit"])["recall"]
        for label, m in self.matches.items():
            if "exclusive_pair" in m:
                parts.append(f"{label}: {'an' if m['exclusive_pair'] else 'no'} exclusive pair for d (base latent "
                             f"cos {m['base_cos']:.3f}, chat latent cos {m['chat_cos']:.3f}, pair cos "
                             f"{m['pair_cos']:.3f})")  # fmt: skip
            else:
                parts.append(f"{label}: {'one triple' if m['single'] else 'not one triple'} for d (triple "
                             f"{m['triple']}, halves cos {m['base_cos']:.3f}/{m['chat_cos']:.3f}, "
                             f"indices with a half above {self.threshold:g}: {m['aligned']}; shared part fires on "
                             f"{recall[(label, 'shared')]:.0%} of A & B, base part on {recall[(label, 'base')]:.0%} "
                             f"of A only, chat part on {recall[(label, 'chat')]:.0%} of B only)")  # fmt: skip
        return "; ".join(parts) + "."

    def glue_values(self) -> dict[str, Any]:
        """The headline numbers, named ``exp5_control_*`` for the book's Findings page."""
        out: dict[str, Any] = {"exp5_control_tokens": self.sizes["tokens"], "exp5_control_a": self.sizes["A"],
                               "exp5_control_b": self.sizes["B"], "exp5_control_both": self.sizes["A & B"]}  # fmt: skip
        table = self.table().set_index(["crosscoder", "unit"])
        for label, m in self.matches.items():
            key = MODELS[label]
            if "exclusive_pair" in m:
                out.update({f"exp5_control_{key}_pair": "yes" if m["exclusive_pair"] else "no",
                            f"exp5_control_{key}_base_cos": round(m["base_cos"], 3),
                            f"exp5_control_{key}_chat_cos": round(m["chat_cos"], 3),
                            f"exp5_control_{key}_pair_cos": round(m["pair_cos"], 3)})  # fmt: skip
            else:
                out.update({f"exp5_control_{key}_single": "yes" if m["single"] else "no",
                            f"exp5_control_{key}_min_cos": round(min(m["base_cos"], m["chat_cos"]), 3),
                            f"exp5_control_{key}_n_aligned": m["n_aligned"]})  # fmt: skip
                for unit in TARGETS["tied"]:
                    row = table.loc[(label, unit)]
                    out[f"exp5_control_{key}_{unit}_precision"] = round(float(row["precision"]), 3)
                    out[f"exp5_control_{key}_{unit}_recall"] = round(float(row["recall"]), 3)
                    out[f"exp5_control_{key}_{unit}_mass_precision"] = round(float(row["mass precision"]), 3)
        return out


def measure_control(models: dict[str, Any], data: ControlData, *, threshold: float = 0.9,
                    exclusive_below: float = 0.3) -> ControlResult:  # fmt: skip
    """Match ``d`` in every crosscoder of ``models`` (label -> model; standard or tied by architecture) and count its
    units' firings on the planted sets of ``data``."""
    matches, firing = {}, {}
    for label, model in models.items():
        W = model.W_dec
        if model.cfg.architecture == "standard":
            m = match_standard(W, data.direction, threshold=threshold, exclusive_below=exclusive_below)
            units = {f"{side}-exclusive": (None, m[f"{side}_latent"]) for side in ("base", "chat")
                     if m[f"{side}_latent"] is not None}  # fmt: skip
            if m["shared_latent"] is not None and m["shared_cos"] > threshold:  # a shared latent for A & B
                units["shared"] = (None, m["shared_latent"])
        else:
            m = match_tied(W, data.direction, threshold=threshold)
            units = {"shared": (SHARED, m["triple"]), "base": (BASE_ONLY, m["triple"]),
                     "chat": (CHAT_ONLY, m["triple"])}  # fmt: skip
        matches[label], firing[label] = m, unit_firing(model, data.rows, data.planted, units)
    return ControlResult(sizes=data.planted.sizes(), matches=matches, firing=firing, threshold=threshold)


@dataclass
class ControlRun:
    """The control repeated over seeds on the same rows: one :class:`ControlResult` per seed."""

    results: dict[int, ControlResult]
    summaries: dict[int, str]
    """Seed -> :meth:`ControlData.summary` of its planted rows."""

    def passed(self, label: str) -> list[bool]:
        """Per seed: the standard crosscoder's exclusive pair, or a tied crosscoder's single triple, for ``d``."""
        return [bool(r.matches[label].get("exclusive_pair", r.matches[label].get("single"))) for r in
                self.results.values()]  # fmt: skip

    def seed_table(self) -> pd.DataFrame:
        """One row per (seed, crosscoder): ``passed`` (pair / single triple), the two decoder cosines with ``d``,
        the indices with a half along ``d`` (tied) or the pair cosine (standard)."""
        out = []
        for seed, r in self.results.items():
            for label, m in r.matches.items():
                standard = "exclusive_pair" in m
                out.append({"seed": seed, "crosscoder": label,
                            "passed": m["exclusive_pair"] if standard else m["single"],
                            "cos base": m["base_cos"], "cos chat": m["chat_cos"],
                            "pair cos": m["pair_cos"] if standard else math.nan,
                            "aligned indices": "-" if standard else str(m["aligned"])})  # fmt: skip
        return pd.DataFrame(out)

    def verdict(self) -> str:
        """How many seeds each crosscoder passed, then each seed's :meth:`ControlResult.verdict`."""
        first = next(iter(self.results.values()))
        counts = ", ".join(f"{label}: {sum(self.passed(label))}/{len(self.results)} seeds "
                           f"({'exclusive pair' if 'exclusive_pair' in m else 'one triple'})"
                           for label, m in first.matches.items())  # fmt: skip
        return "\n".join([f"Passed: {counts}.", *(f"seed {s}: {r.verdict()}" for s, r in self.results.items())])

    def glue_values(self) -> dict[str, Any]:
        """``exp5_control_seeds``, ``exp5_control_<model>_passed`` ("k/n") and the first seed's
        :meth:`ControlResult.glue_values`."""
        first = next(iter(self.results.values()))
        out = {"exp5_control_seeds": len(self.results), **first.glue_values()}
        for label in first.matches:
            out[f"exp5_control_{MODELS[label]}_passed"] = f"{sum(self.passed(label))}/{len(self.results)}"
        return out


def run_control(rows: Float[Tensor, "n_tokens 2 d_model"], norm_factors: Tensor | None, cs: ControlSettings,
                results: str | Path, *, device: str = "cpu", log_every: int = 100,
                source: str | None = None) -> ControlRun:  # fmt: skip
    """For each seed of ``cs.seeds``: plant ``d`` in ``rows`` (:func:`control_data`), train the three crosscoders
    (:func:`train_control_crosscoders`) and measure them (:func:`measure_control`); only the measurements are kept.
    ``source``: the :attr:`~tiedlib.pairs.ModelPair.fingerprint` of the pair ``rows`` were harvested from (pass
    ``pair.fingerprint``), recorded and checked in the run folders."""
    out, summaries = {}, {}
    for seed in cs.seeds:
        one = replace(cs, seed=seed)
        data = control_data(rows, one, norm_factors, source=source)
        models = train_control_crosscoders(data, one, results, device=device, log_every=log_every)
        out[seed] = measure_control(models, data, threshold=cs.threshold, exclusive_below=cs.exclusive_below)
        summaries[seed] = data.summary()
    return ControlRun(results=out, summaries=summaries)


__all__ = ["MODELS", "SETS", "TARGETS", "ControlData", "ControlResult", "ControlRun", "PlantedSets", "control_configs",
           "control_data", "control_key", "inject", "match_standard", "match_tied", "measure_control",
           "pair_control_rows", "planted_direction", "planted_sets", "run_control", "train_control_crosscoders",
           "unit_firing"]  # fmt: skip

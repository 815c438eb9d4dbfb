"""The colour toy of Experiment 2: load it, describe its sets and fine-tunes, and check the fine-tunes' colour choice
on prefixes they never saw."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from tiedlib.analysis.logit_lens import unembedding
from tiedlib.pairs import LAB_PAIRS, load_pair
from tiedlib.pairs.colours import (
    COLOURS,
    SWAP_MODES,
    ColourToy,
    build_colour_toy,
    colour_choice_summary,
    colour_probabilities,
    quiet_transformers_bars,
)

from .presets import Exp2Settings


def load_colour_toy(settings: Exp2Settings, *, cache_dir: Any = None) -> ColourToy:
    """Load the toy's source pair and build the colour toy on it (sets, and both fine-tunes, trained once and then
    loaded from ``cache_dir``; default ``<tiedlib cache>/finetuned``).

    Paper pairs are loaded in ``settings.toy.dtype``; lab pairs stay float32.
    """
    cfg = settings.toy
    dtype = getattr(torch, cfg.dtype) if cfg.pair not in LAB_PAIRS else None
    with quiet_transformers_bars():  # no "Loading weights" bar in the executed notebook
        source = load_pair(cfg.pair, layer=cfg.layer, device=cfg.device, dtype=dtype)
    return build_colour_toy(source, cfg, cache_dir=cache_dir)


def sets_report(toy: ColourToy) -> str:
    """One line per colour: number of prefixes, mean length in tokens, and the first prefix (BOS dropped)."""
    tok = toy.source.tokenizer
    lines = []
    for c in COLOURS:
        prefixes = toy.sets[c]
        if not prefixes:
            raise ValueError(f"the {c} set is empty")
        mean = sum(map(len, prefixes)) / len(prefixes)
        lines.append(f"{c}: {len(prefixes)} prefixes, mean length {mean:.1f} tokens; "
                     f"e.g. {tok.decode(prefixes[0][1:])!r} -> ' {c}'")
    return "\n".join(lines)


def finetune_report(info: dict[str, dict]) -> str:
    """One line per fine-tune (``ColourToy.info``): trained or loaded, number of examples, first and last loss."""
    lines = []
    for mode in SWAP_MODES:
        i = info[mode]
        losses = i["losses"]
        lines.append(f"{mode}: {'loaded from cache' if i['cached'] else 'trained'}, {i['n_examples']} examples, "
                     f"loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    return "\n".join(lines)


@dataclass
class HeldOutChoice:
    """How each model of the toy chooses between the two colours after held-out prefixes."""

    by_model: dict[str, dict[str, float]]
    """``{model name: {"p_true", "p_other", "true_wins"}}`` (from
    :func:`tiedlib.pairs.colours.colour_choice_summary`)."""
    n_prefixes: int
    """Held-out prefixes (both colours together)."""

    def table(self) -> pd.DataFrame:
        """One row per model: mean P(true colour), mean P(other colour), fraction where the true colour wins."""
        return pd.DataFrame(self.by_model).T.rename_axis("model")

    def summary(self) -> str:
        return "\n".join(
            f"{name:>9}: P(true colour) {c['p_true']:.3f}, P(other colour) {c['p_other']:.3f}, true colour preferred "
            f"on {c['true_wins']:.0%} of {self.n_prefixes} held-out prefixes" for name, c in self.by_model.items())


def held_out_choice(toy: ColourToy, n: int) -> HeldOutChoice:
    """P(" blue") and P(" green") of the base model and both fine-tunes after up to ``n`` held-out prefixes per
    colour (:meth:`ColourToy.held_out`), summarised per model."""
    held = toy.held_out(n)
    by_model = {}
    for name, model in toy.models.items():
        probs = {c: colour_probabilities(model, held[c], toy.colour_ids, pad_id=toy.pad_id) for c in COLOURS}
        by_model[name] = colour_choice_summary(probs)
    return HeldOutChoice(by_model, sum(map(len, held.values())))


def unembeddings(toy: ColourToy, *, fold_final_norm: bool = True) -> dict[str, Float[Tensor, "d_model vocab"]]:
    """``W_U`` of each model of the toy (``"base"``, ``"no-swap"``, ``"half-swap"``), final-norm gain folded in when
    asked (:func:`tiedlib.analysis.logit_lens.unembedding`)."""
    return {name: unembedding(m, fold_final_norm=fold_final_norm) for name, m in toy.models.items()}

"""Issue 13: no code path holds all activations of a paper-scale dataset in memory.

For the paper preset of every experiment, the bytes of activations each collect path holds, computed from the preset
with the library's own rule (:func:`tiedlib.activations.collect.plan_collect`), without loading a model. The token
counts are upper bounds (every sequence at its longest). Before the rule existed, Experiment 2 and the colour toy of
notebook 05 harvested their 80k prefixes in memory: up to ``80_000 x 1024`` tokens of ``2 x 2304`` float32, 1.5 TB.
"""

from __future__ import annotations

import pytest

from tiedlib.activations.buffer import ActivationBuffer
from tiedlib.activations.collect import (
    MEMORY_LIMIT_BYTES,
    buffer_tokens_for,
    harvest_bytes_per_token,
    plan_collect,
)
from tiedlib.cli import PAPER_PAIR_SHAPES
from tiedlib.experiments import exp1, exp2, exp3, exp4, exp5
from tiedlib.lab.config import LabConfig

BOUND = 8 * 2**30
D_MODEL = PAPER_PAIR_SHAPES["gemma-2-2b"].d_model


def _streamed_buffer(batch_size: int) -> int:
    """A buffer fed by :func:`tiedlib.activations.collect.training_data` with ``in_memory=False``."""
    return ActivationBuffer.bytes_needed(buffer_tokens_for(batch_size, D_MODEL), D_MODEL)


def _held_in_memory(n_tokens: int) -> int:
    """A sample forced in memory (``in_memory=True``: :func:`tiedlib.analysis.contexts.eval_sample`), plus the
    normalised copy an analysis may make of it."""
    return n_tokens * (harvest_bytes_per_token(D_MODEL) + 2 * D_MODEL * 4)


def _colour_toy(toy, batch_size: int) -> dict[str, int]:
    """The colour toy's crosscoder data (exp2's ``collect``, exp5's ``colour_activations``: the automatic rule) and
    the rows exp5's ``find_colour_triples`` keeps (the last two tokens of each prefix)."""
    n_seqs = 2 * toy.n_crosscoder_per_colour
    n_tokens = n_seqs * toy.max_prefix_tokens  # BOS + up to max_prefix_tokens - 1 tokens + the colour; BOS dropped
    plan = plan_collect(n_tokens, D_MODEL, batch_size=batch_size)
    return {"crosscoder data": plan.held_bytes, "rows around the colour tokens": _held_in_memory(2 * n_seqs)}


def paper_collect_paths() -> dict[str, int]:
    """``"<experiment>: <path>"`` -> bytes of activations that path holds at the paper preset."""
    s1, s2, s3, s4, s5 = (t.TABLE["paper"] for t in (exp1, exp2, exp3, exp4, exp5))
    out = {
        # exp1: training_data(in_memory=is_lab(pair)) streams the paper pair; eval_sample holds each source.
        "exp1: training data (buffer)": _streamed_buffer(s1.batch_size),
        "exp1: held-out sample per source": _held_in_memory(s1.eval_docs * s1.seq_len),
        # exp3 at paper harvests nothing to train on (Gemma Scope SAEs) and sums latents batch by batch.
        "exp3: SAE training tokens": s3.n_mix_docs * 1024 * harvest_bytes_per_token(D_MODEL),
        # exp4 at paper loads the release; its norm factors are estimated on a stream of norm_docs documents.
        "exp4: training data": 0 if s4.checkpoint else plan_collect(s4.n_docs * 1024, D_MODEL,
                                                                    batch_size=s4.batch_size).held_bytes,
        "exp5: lab training data (buffer)": _streamed_buffer(s5.batch_size),
        "exp5: held-out sample per source": _held_in_memory(s5.eval_docs * s5.seq_len),
    }
    out.update({f"exp2: {k}": v for k, v in _colour_toy(s2.toy, s2.batch_size).items()})
    out.update({f"exp5 colour toy: {k}": v for k, v in _colour_toy(s5.colour, s5.colour_batch_size).items()})
    return out


def test_the_limit_is_the_bound():
    assert MEMORY_LIMIT_BYTES <= BOUND


@pytest.mark.parametrize("path", sorted(paper_collect_paths()))
def test_every_paper_collect_path_is_bounded(path):
    held = paper_collect_paths()[path]
    assert held <= BOUND, f"{path} holds {held / 2**30:.1f} GiB at the paper preset (bound {BOUND / 2**30:.0f} GiB)"


def test_the_colour_toy_streams_at_paper_scale_and_stays_in_memory_below():
    for scale, want in (("paper", False), ("tiny", True), ("smoke", True)):
        for toy, batch in ((exp2.TABLE[scale].toy, exp2.TABLE[scale].batch_size),
                           (exp5.TABLE[scale].colour, exp5.TABLE[scale].colour_batch_size)):  # fmt: skip
            d_model = D_MODEL if scale == "paper" else LabConfig.from_name(toy.pair).model.hidden_size
            n_tokens = 2 * toy.n_crosscoder_per_colour * toy.max_prefix_tokens
            assert plan_collect(n_tokens, d_model, batch_size=batch).in_memory is want, (scale, toy)

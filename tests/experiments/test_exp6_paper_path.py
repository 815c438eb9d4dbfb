"""Notebook 06's paper column on CPU: the paper preset (sizes overridden to tiny ones) on two random Gemma-2 models
named like the paper pair, through every pipeline call the notebook makes (training streamed, as at paper scale)."""

from __future__ import annotations

import math

import pytest
import torch

from tests.helpers_paper import offline_corpora, paper_stand_in
from tiedlib.config import pick
from tiedlib.experiments import exp6
from tiedlib.experiments.exp6 import SyntheticAblationSize, concept_ablation

TINY = dict(layer=1, n_latents=16, train_docs=12, n_steps=4, batch_size=16, eval_docs=4, ce_docs=2, ce_batch_size=2,
            seq_len=12, model_batch_size=4, device="cpu", log_every=2, min_active=1, new_min_fires=1,
            match_k=2)  # fmt: skip
pytestmark = pytest.mark.filterwarnings("ignore:ActivationBuffer")  # 12 short sequences are reused on purpose
SYNTHETIC = SyntheticAblationSize(d_model=8, n_shared=4, n_shifted=4, n_rows=256, n_eval=128, n_latents=12,
                                  n_steps=5, batch_size=64)  # fmt: skip


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])  # CPU / CUDA pair
def test_paper_preset_runs_the_notebook_pipeline(tmp_path, monkeypatch, dtype):
    offline_corpora(monkeypatch)
    settings = pick(exp6.TABLE, "paper", **TINY)
    paper = exp6.TABLE["paper"]
    assert (settings.eta, settings.small_eta, settings.l1_coeff, settings.lr) == (paper.eta, paper.small_eta, 2.0, 5e-5)
    pair = paper_stand_in(dtype=dtype)
    crosscoders = exp6.train_crosscoders(pair, settings, tmp_path / settings.run_id)
    assert list(crosscoders.models) == list(exp6.ARCHITECTURES) and crosscoders.n_train_sequences == 12
    assert all(log[-1]["step"] == 4 for log in crosscoders.logs.values())
    assert crosscoders.fit_table()["l0"].notna().all()

    held = exp6.held_out(pair, settings, crosscoders.models["tied"].cfg.norm_factors)
    assert held.docs == {"web": None, "chat": None}
    n_tokens = held.acts.harvest.acts.shape[0]
    assert held.roles.template.shape == (n_tokens,) and held.roles.template.any() and held.roles.assistant.any()

    ce = exp6.spliced_evaluation(pair, crosscoders, held, settings)
    assert len(ce) == 4 * 2 * 2 and ce["n_predictions"].gt(0).all()
    assert ce[["ce_clean", "ce_spliced", "ce_zero", "kl"]].notna().all().all()

    scaling = exp6.chat_latent_scaling(crosscoders, held, settings)
    scaling_summary = exp6.scaling_table(scaling, settings.nu_threshold)
    loc = exp6.chat_localisation(crosscoders, held, scaling)
    loc_summary = exp6.localisation_table(loc, settings.template_threshold)
    assert list(scaling_summary.index) == list(loc_summary.index) == list(exp6.ARCHITECTURES)
    assert scaling_summary.loc["tied", "chat-only latents"] > 0  # random models: some chat parts fire

    news = exp6.novel.find_new(crosscoders, held, settings)
    labels = exp6.novel.chat_labels(held, settings)
    assert labels is None  # no planted concepts on the paper pair
    matches = exp6.novel.concept_matches(crosscoders, held, news, labels, settings)
    new_summary = exp6.novel.new_latent_table(crosscoders, news, matches)
    assert set(new_summary.index) == set(exp6.pipeline.TIED)
    assert exp6.novel.new_latent_paragraph(new_summary, settings)

    truth = exp6.synthetic_ground_truth(settings, SYNTHETIC)
    lab_ablation = exp6.lab_costs(crosscoders, held)
    ablation = exp6.ablation_table(truth, lab_ablation, settings, settings.pair)
    assert ("gemma-2-2b pair", "tied, all firing") in ablation.index

    tables = concept_ablation.concept_tables(crosscoders, held, settings)
    assert tables is None and concept_ablation.compact_table(tables) is None
    headline = exp6.findings(settings, "paper", crosscoders, ce, scaling_summary, loc_summary)
    headline.update(exp6.ablation_findings(ablation, settings.pair))
    headline.update(concept_ablation.concept_findings(tables))
    headline.update(exp6.novel.new_findings(new_summary, settings, None))
    assert headline["exp6_setup"].startswith("paper scale, gemma-2-2b pair")
    assert {f"exp6_ce_{name}" for name in exp6.ARCHITECTURES} <= set(headline)
    assert all(isinstance(v, str) and v for v in headline.values())
    recovered = ce.xs("web", level="data")["recovered"]
    assert recovered.map(math.isfinite).all()

    again = exp6.train_crosscoders(pair, settings, tmp_path / settings.run_id)  # finished runs reload
    for name, model in crosscoders.models.items():
        torch.testing.assert_close(again.models[name].W_dec, model.W_dec)


def test_paper_preset_holds_a_bounded_share_of_its_activations():
    """Issue 13's bound (tests/experiments/test_paper_memory.py) for notebook 06's collect paths at the paper preset:
    the training data streams (``in_memory=is_lab(pair)``); the held-out web and chat sample is held, with the
    normalised copy the ablation makes of it."""
    from tests.experiments.test_paper_memory import BOUND, _held_in_memory, _streamed_buffer

    s = exp6.TABLE["paper"]
    held = {"training data (buffer)": _streamed_buffer(s.batch_size),
            "held-out web + chat sample": _held_in_memory(2 * max(s.eval_docs, s.ce_docs) * s.seq_len)}  # fmt: skip
    for path, n_bytes in held.items():
        assert n_bytes <= BOUND, f"exp6 {path} holds {n_bytes / 2**30:.1f} GiB at the paper preset"

"""Notebook 07's paper column on CPU: the paper preset (sizes overridden to tiny ones) on two random Gemma-2 models
named like the paper pair, through every pipeline call the notebook makes, with the activations streamed as at paper
scale (nothing fits the memory bound)."""

from __future__ import annotations

import json

import pytest
import torch

import tiedlib.activations.collect as collect_module
from tests.helpers_paper import offline_corpora, paper_stand_in
from tiedlib.config import pick
from tiedlib.experiments import exp7

TINY = dict(layer=1, n_latents=16, d_sae=16, train_docs=12, n_steps=4, batch_size=16, eval_docs=4, seq_len=12,
            model_batch_size=4, device="cpu", log_every=2, k=3, n_dashboards=2, top_k_contexts=2)  # fmt: skip


@pytest.fixture(params=[torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])  # paper pair on a CPU / CUDA
def paper_run(tmp_path, monkeypatch, request):
    offline_corpora(monkeypatch)
    monkeypatch.setattr(collect_module, "MEMORY_LIMIT_BYTES", 1)  # nothing fits: stream, as at paper scale
    settings = pick(exp7.TABLE, "paper", **TINY)
    pair = paper_stand_in(dtype=request.param)
    return settings, pair, tmp_path


def test_paper_preset_runs_the_notebook_pipeline_streamed(paper_run):
    settings, pair, tmp_path = paper_run
    paper = exp7.TABLE["paper"]
    assert (settings.eta, settings.l1_coeff, settings.sae_l1, settings.lr) == (paper.eta, 2.0, 5.0, 5e-5)
    models = exp7.train_models(pair, settings, tmp_path / settings.run_id)
    assert models.tied.cfg.architecture == "tied" and models.tied.cfg.n_latents == 16
    assert models.log[-1]["step"] == 4 and models.fits == {}  # streamed: no in-memory SAE fit
    fit = models.fit_table()
    assert list(fit.index) == ["tied crosscoder (base)", "tied crosscoder (chat)"] and fit["fvu"].notna().all()
    for name in ("base", "chat"):
        assert models.saes[name].W_dec.shape == (16, 32)
    samples = exp7.held_out(pair, settings)
    assert samples["web"].docs is None and samples["chat"].docs is None
    assert exp7.concept_tables(models, samples) is None  # the paper pair has no concept labels
    found = []  # the notebook: matches(...) if tables else []
    table = exp7.precision(found, settings)
    assert len(table) == 0
    latents = exp7.dashboard_latents(found, settings, models.tied.cfg.n_latents)
    assert latents == [0, 1]
    pages, index = exp7.dashboards(pair, models, samples, latents, settings, tmp_path / "dashboards")
    assert [p.latent for p in pages] == latents and index.exists()
    data = json.loads((tmp_path / "dashboards" / "dashboards.json").read_text())
    assert data["meta"]["pair"] == "gemma-2-2b" and [d["latent"] for d in data["latents"]] == latents
    for d in data["latents"]:
        assert set(d["logits"]) == {"base", "chat"} and {p["part"] for p in d["parts"]} == {"shared", "base", "chat"}
        assert all(set(p["datasets"]) == {"web", "chat"} for p in d["parts"])
    batches = sorted(p.name for p in (tmp_path / "dashboards" / "neuronpedia").glob("*.json"))
    assert len(batches) == 8 and "chat-chat-web.json" in batches  # (model, part into it, dataset) for a tied triple
    batch = json.loads((tmp_path / "dashboards" / "neuronpedia" / "chat-chat-web.json").read_text())
    assert batch["model_id"] == "gemma-2-2b-it" and batch["layer"] == 1
    assert [f["feature_index"] for f in batch["features"]] == latents
    headline = exp7.findings(settings, "paper", table, len(pages))
    assert headline["exp7_dashboards"] == "2" and headline["exp7_sae_p1"] == "n/a"
    again = exp7.train_models(pair, settings, tmp_path / settings.run_id)  # the crosscoder reloads
    torch.testing.assert_close(again.tied.W_dec, models.tied.W_dec)


def test_paper_preset_holds_a_bounded_share_of_its_activations():
    """Issue 13's bound (tests/experiments/test_paper_memory.py) for notebook 07's collect paths at the paper preset:
    the training data follows the automatic rule (streamed at this size), each held-out source is held."""
    from tests.experiments.test_paper_memory import BOUND, D_MODEL, _held_in_memory
    from tiedlib.activations.collect import plan_collect

    s = exp7.TABLE["paper"]
    plan = plan_collect(s.train_docs * s.seq_len, D_MODEL, batch_size=s.batch_size)
    assert not plan.in_memory  # 256M tokens: the SAEs and the crosscoder read a streamed buffer
    held = {"training data": plan.held_bytes, "held-out sample per source": _held_in_memory(s.eval_docs * s.seq_len)}
    for path, n_bytes in held.items():
        assert n_bytes <= BOUND, f"exp7 {path} holds {n_bytes / 2**30:.1f} GiB at the paper preset"

"""Experiment 7's presets, matching, dashboard choice, findings and figure on hand-made inputs (the whole pipeline runs
in the smoke notebook test)."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import matplotlib
import pytest
import torch

from tests.helpers import make_model
from tiedlib.config import pick
from tiedlib.experiments import exp7
from tiedlib.experiments.exp7 import TABLE, ConceptTables, Models

matplotlib.use("Agg")
CONCEPTS = ["refusal", "code", "turn_marker"]


def test_presets_cover_every_scale_and_validate():
    assert set(TABLE) == {"smoke", "tiny", "paper"}
    assert TABLE["paper"].n_latents == 16_384 and TABLE["paper"].eta == 2.0 and TABLE["paper"].layer == 14
    assert len({s.run_id for s in TABLE.values()}) == 3
    assert pick(TABLE, "smoke", n_steps=7).run_id != TABLE["smoke"].run_id
    with pytest.raises(ValueError, match="must be positive"):
        replace(TABLE["smoke"], d_sae=0)
    with pytest.raises(ValueError, match="auroc_threshold"):
        replace(TABLE["smoke"], auroc_threshold=0.4)
    with pytest.raises(ValueError, match="more than the"):
        replace(TABLE["smoke"], k=33)


def _models_and_tables():
    """4 SAE latents and 4 tied triples per side in d = 4; chat-side latent 0 detects refusal, 1 detects code, and
    turn_marker (chat only) is not a query. The SAEs' base twin of chat latent 0 is base latent 2 (same decoder
    vector); the tied triple 1's own base part detects code."""
    eye = torch.eye(4)
    saes = {"chat": SimpleNamespace(W_dec=eye.clone()), "base": SimpleNamespace(W_dec=eye[[3, 1, 0, 2]].clone())}
    tied = make_model(architecture="tied", d_model=4, n_latents=4)
    with torch.no_grad():
        tied.W_dec[:, 1] = eye  # chat decoders
        tied.W_dec[:, 0] = eye[[1, 0, 3, 2]]  # base decoders: chat part 0's closest base part is triple 1
    low = torch.full((3, 4), 0.5)
    sae_chat, sae_base, tied_chat, tied_base = low.clone(), low.clone(), low.clone(), low.clone()
    sae_chat[0, 0] = sae_chat[1, 1] = sae_chat[2, 2] = 0.99
    sae_base[0, 2] = 0.95  # base SAE latent 2 detects refusal
    tied_chat[0, 0] = tied_chat[1, 1] = 0.97
    tied_base[1, 1] = 0.93  # triple 1's base part detects code
    shared_chat, shared_web = low.clone(), low.clone()
    shared_chat[1, 2] = shared_chat[0, 3] = shared_web[1, 2] = 0.96  # shared part 2 detects code in both datasets
    tables = ConceptTables(CONCEPTS, ["refusal", "code"], {"base": sae_base, "chat": sae_chat},
                           {"base": tied_base, "chat": tied_chat, "shared_chat": shared_chat,
                            "shared_web": shared_web})  # fmt: skip
    return Models(saes, tied, [], torch.ones(2), {}), tables


def test_matches_score_the_four_methods():
    models, tables = _models_and_tables()
    settings = replace(TABLE["smoke"], k=2)
    found = {m.method: m for m in exp7.matches(models, tables, settings)}
    sae = found["SAEs (decoder cosine)"]
    assert sae.queries.tolist() == [0, 1] and sae.concepts == ["refusal", "code"]
    assert sae.retrieved[:, 0].tolist() == [2, 1] and sae.hits[:, 0].tolist() == [True, False]
    own = found["tied (own triple)"]
    assert own.retrieved.tolist() == [[0], [1]] and own.hits.tolist() == [[False], [True]]
    cos = found["tied (decoder cosine)"]
    assert cos.retrieved[:, 0].tolist() == [1, 0] and cos.hits[:, 0].tolist() == [False, False]
    shared = found["tied (shared part)"]
    assert shared.queries.tolist() == [2, 3] and shared.hits.tolist() == [[True], [False]]
    table = exp7.precision(list(found.values()), settings)
    assert table.loc["SAEs (decoder cosine)", "precision@1"] == 0.5 and table.loc["tied (own triple)", "queries"] == 2
    assert exp7.dashboard_latents(list(found.values()), replace(settings, n_dashboards=3), 4) == [1, 0, 2]
    headline = exp7.findings(settings, "smoke", table, 3)
    assert headline["exp7_sae_p1"] == "0.50" and headline["exp7_tied_own_p1"] == "0.50"
    assert all(k.startswith("exp7_") for k in headline) and "precision@2" in exp7.summary(headline)
    fig = exp7.figures.precision_bars(table)
    assert len(fig.axes[0].patches) == 4 * 2


def test_findings_without_labels_say_not_available():
    import pandas as pd

    headline = exp7.findings(TABLE["paper"], "paper", pd.DataFrame(), 6)
    assert headline["exp7_sae_queries"] == "0" and headline["exp7_sae_p1"] == "n/a"
    assert "n/a" in exp7.summary(headline)

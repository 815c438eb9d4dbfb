"""Experiment 6's four crosscoders (configs, candidates) and its new-chat-latent tables and findings on hand-made
inputs (the whole pipeline runs in the smoke notebook test)."""

from __future__ import annotations

import math
from dataclasses import replace

import pandas as pd
import pytest
import torch

from tests.helpers import make_model
from tiedlib.analysis.novel import NewChatLatents
from tiedlib.crosscoders.crosscoder import recommended_tied
from tiedlib.experiments import exp6
from tiedlib.experiments.exp6 import TABLE, Crosscoders


def test_the_four_configs_share_size_and_differ_in_penalty():
    s = TABLE["smoke"]
    cfgs = {name: exp6.crosscoder_config(name, s, 16) for name in exp6.ARCHITECTURES}
    assert list(cfgs) == ["standard", "tied", "tied_small_eta", "recommended"]
    assert {c.n_latents for c in cfgs.values()} == {s.n_latents}
    assert cfgs["standard"].architecture == "standard"
    assert (cfgs["tied"].eta, cfgs["tied"].shared_penalty) == (2.0, "sum")
    assert cfgs["tied_small_eta"].eta == s.small_eta < cfgs["tied"].eta and s.small_eta > 1
    assert cfgs["recommended"] == recommended_tied(16, s.n_latents).cfg
    with pytest.raises(ValueError, match="crosscoder must be one of"):
        exp6.crosscoder_config("tied_eta_3", s, 16)
    with pytest.raises(ValueError, match="new_max_overlap in"):
        replace(s, new_max_overlap=1.0)


def test_every_tied_crosscoder_offers_all_its_chat_parts():
    models = {"standard": make_model(n_latents=6), "tied": make_model(n_latents=5, architecture="tied"),
              "recommended": recommended_tied(16, 4)}  # fmt: skip
    cands = exp6.chat_only_candidates(Crosscoders(models, {}, 0), TABLE["smoke"])
    assert cands["recommended"][0].tolist() == [0, 1, 2, 3] and cands["recommended"][1] == "chat"
    assert cands["tied"][0].tolist() == list(range(5)) and cands["standard"][1] is None


def _news(chat, shared, overlap):
    return NewChatLatents(torch.tensor(chat), torch.tensor(shared), torch.tensor(overlap), min_fires=3, max_overlap=0.1)


def test_new_latent_table_findings_and_paragraph():
    s = TABLE["smoke"]
    models = {"tied": make_model(n_latents=4, architecture="tied"), "recommended": recommended_tied(16, 4)}
    # tied: triples 0 and 1 new (0 and 1 of 10 overlapping), 2 dominated by its shared part, 3 too rare.
    news = {"tied": _news([10, 10, 5, 2], [0, 30, 9, 0], [0, 1, 5, 0]), "recommended": _news([0] * 4, [1] * 4, [0] * 4)}
    matches = {"tied": pd.DataFrame({"concept": ["greeting", "refusal"], "matched": [True, True],
                                     "chat_only": [True, False]}, index=[0, 1]),
               "recommended": pd.DataFrame({"concept": [], "matched": [], "chat_only": []})}  # fmt: skip
    table = exp6.novel.new_latent_table(Crosscoders(models, {}, 0), news, matches)
    assert table.loc["tied", ["chat parts judged", "new chat latents", "shared fires more"]].tolist() == [3, 2, 2]
    assert table.loc["tied", "share new"] == pytest.approx(2 / 3)
    assert table.loc["tied", ["match a concept", "match a chat-only concept"]].tolist() == [2, 1]
    assert table.loc["recommended", "penalty"] == "written" and math.isnan(table.loc["recommended", "share new"])
    out = exp6.novel.new_findings(table, s, ["greeting"])
    assert out["exp6_new_tied"] == ("2 new chat latents of 3 chat parts judged (eta 2, sum penalty); 2 match a "
                                    "planted concept, 1 a chat-only one")  # fmt: skip
    assert out["exp6_new_recommended"].startswith("0 new chat latents of 0 chat parts judged (eta 1.5, written")
    assert "chat-only concepts: greeting" in out["exp6_new_rule"]
    no_labels = exp6.novel.new_latent_table(Crosscoders(models, {}, 0), news, None)
    assert "n/a match a planted concept" in exp6.novel.new_findings(no_labels, s, None)["exp6_new_tied"]
    text = exp6.novel.new_latent_paragraph(table, s)
    assert "`tied` (eta 2) has 2 of 3 judged chat parts that are new, 1 of them" in text and "67%, 0%" in text
    counts = exp6.novel.concept_counts(matches, ["greeting"])
    assert counts.loc["greeting *", "tied"] == 1 and counts.loc["refusal", "recommended"] == 0

"""Experiment 3 analysis: latent selection, Jaccard, bootstrap, sae_lens training, offline errors, harvesting."""

from __future__ import annotations

import math
import time

import pytest
import torch

from tiedlib.experiments.exp3.overlap import (
    bootstrap_overlap,
    chance_jaccard,
    cluster_index,
    cluster_weights,
    collect_tokens,
    difference_correlation,
    jaccard,
    load_sae,
    overlap,
    overlap_table,
    position_sums,
    require_questions,
    sae_metrics,
    save_sae,
    select_latents,
    train_sae,
)
from tiedlib.experiments.exp3.positions import (
    chat_render,
    common_suffix_length,
    end_of_prompt_lengths,
    end_of_prompt_mask,
    format_suffix,
    token_strings,
)
from tiedlib.experiments.exp3.sources import (
    SourceUnavailableError,
    cannot_can_texts,
    load_arditi_prompts,
    load_pretrained_sae,
    prompt_suffixes,
    tokenize_prompts,
)


def _mask(d: int, idx: list[int]) -> torch.Tensor:
    m = torch.zeros(d, dtype=torch.bool)
    m[idx] = True
    return m


def test_jaccard_of_hand_made_sets():
    a, b = _mask(10, [0, 1, 2, 3]), _mask(10, [2, 3, 4])
    assert float(jaccard(a, b)) == pytest.approx(2 / 5)
    assert float(jaccard(a, a)) == 1.0
    assert float(jaccard(a, _mask(10, [7]))) == 0.0
    assert math.isnan(float(jaccard(_mask(10, []), _mask(10, []))))
    batched = jaccard(torch.stack([a, a]), torch.stack([b, a]))
    assert batched.tolist() == pytest.approx([0.4, 1.0])


def test_selection_rules_on_hand_made_sums():
    sum_a = torch.tensor([5.0, 3.0, 1.0, 0.0, 2.0, 10.0])
    sum_b = torch.tensor([1.0, 2.5, 1.0, 0.0, 3.0, 9.0])
    # write-up rule: strictly larger sum; latents silent on both (index 3) and ties (index 2) are out
    assert select_latents(sum_a, sum_b).tolist() == [True, True, False, False, False, True]
    # relative margin 0.1: (a - b) / (a + b) is 0.667, 0.091, -, -, -, 0.053
    assert select_latents(sum_a, sum_b, margin=0.1).tolist() == [True, False, False, False, False, False]
    # top-2 by difference a - b: 4.0 (index 0), then 1.0 (index 5) beats 0.5 (index 1)
    assert select_latents(sum_a, sum_b, top_k=2).tolist() == [True, False, False, False, False, True]
    # top-k never adds latents the base rule rejects
    assert select_latents(sum_a, sum_b, top_k=5).sum() == 3
    with pytest.raises(ValueError):
        select_latents(sum_a, sum_b, margin=1.0)


def _sums(n: int, d: int = 40, shared: float = 0.0, seed: int = 0) -> dict[str, torch.Tensor]:
    """Per-prompt sums where latents 0-9 prefer cannot, 10-19 prefer harmful (and ``shared`` of them both)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(4, n, d, generator=g) * 2.0
    cannot, can, harmful, harmless = base
    cannot[:, :10] += 1.0
    harmful[:, 10:20] += 1.0
    k = int(shared * 10)
    harmful[:, :k] += 1.0
    return {"cannot": cannot, "can": can, "harmful": harmful, "harmless": harmless}


def test_overlap_counts_planted_latents():
    j, n_ref, n_harm = overlap(_sums(400, shared=0.0), margin=0.1)
    assert (n_ref, n_harm) == (10, 10)
    assert j == 0.0
    j, _, n_harm = overlap(_sums(400, shared=0.5), margin=0.1)
    assert n_harm == 15 and j == pytest.approx(5 / 20)


def test_bootstrap_contains_point_and_narrows_with_more_prompts():
    widths = []
    for n in (20, 320):
        sums = {"base": _sums(n, shared=0.2, seed=1), "chat": _sums(n, shared=0.6, seed=2)}
        est = bootstrap_overlap(sums, n_boot=300, seed=0, margin=0.1)
        for key in ("base", "chat", "chat_minus_base"):
            assert est[key].low <= est[key].point <= est[key].high, (n, key, est[key][:3])
        assert est["chat_minus_base"].point == pytest.approx(est["chat"].point - est["base"].point)
        widths.append(est["chat"].high - est["chat"].low)
    assert widths[1] < widths[0] / 2
    # with many prompts the planted difference (0.6 vs 0.2 shared) is resolved
    assert est["chat_minus_base"].low > 0


def test_loose_rule_picks_unpreferring_latents_by_coin_flip():
    # latents 20-39 prefer nothing: the write-up rule still selects about half of them for each contrast, so two
    # unrelated contrasts overlap at about the chance level that chance_jaccard predicts
    sums = _sums(50, d=2000, seed=5)
    j, n_ref, n_harm = overlap(sums)
    assert 800 < n_ref < 1200 and 800 < n_harm < 1200
    assert j == pytest.approx(chance_jaccard(n_ref, n_harm, 2000), abs=0.05)
    assert chance_jaccard(10, 10, 20) == pytest.approx(5 / 15)
    assert chance_jaccard(0, 0, 20) == 0.0
    # pools of 20 latents sharing 10: a shared latent is in each set with probability 1/2, so x = 2.5
    assert chance_jaccard(10, 10, 10, n_pool_a=20, n_pool_b=20) == pytest.approx(2.5 / 17.5)
    assert chance_jaccard(10, 10, 0, n_pool_a=20, n_pool_b=20) == 0.0  # disjoint pools cannot overlap
    with pytest.raises(ValueError, match="pools"):
        chance_jaccard(30, 10, 10, n_pool_a=20, n_pool_b=20)


def test_bootstrap_is_reproducible_and_table_has_rows():
    sums = {"base": _sums(30, seed=3), "chat": _sums(30, shared=0.5, seed=4)}
    a = bootstrap_overlap(sums, n_boot=50, seed=7)
    b = bootstrap_overlap(sums, n_boot=50, seed=7)
    assert torch.equal(a["chat"].draws, b["chat"].draws)
    rows = overlap_table(sums, {"loose": {}, "top": {"top_k": 5}}, n_boot=50)
    assert [r["rule"] for r in rows] == ["loose", "top"]
    assert rows[1]["base_n_cannot"] == 5 and 0.0 <= rows[0]["p_chat_le_base"] <= 1.0
    assert -1.0 <= difference_correlation(sums["chat"]) <= 1.0


def test_sae_lens_training_lowers_mse(tmp_path):
    from sae_lens import SAE, StandardSAE, StandardSAEConfig

    torch.manual_seed(0)
    dirs = torch.randn(24, 16)
    codes = torch.rand(3000, 24) * (torch.rand(3000, 24) < 0.15)
    acts = codes @ dirs + 0.01 * torch.randn(3000, 16)
    untrained = StandardSAE(StandardSAEConfig(d_in=16, d_sae=64))
    before = sae_metrics(untrained, acts)["mse"]
    sae = train_sae(acts, d_sae=64, l1_coefficient=0.5, total_samples=25_000, batch_size=256, lr=5e-3)
    after = sae_metrics(sae, acts)
    assert after["mse"] < 0.5 * before and after["fvu"] < 0.5
    save_sae(sae, tmp_path / "sae")
    loaded = load_sae(tmp_path / "sae")
    assert isinstance(loaded, SAE)
    assert torch.allclose(loaded.encode(acts[:50]), sae.encode(acts[:50]), atol=1e-5)


def test_offline_pretrained_sae_error_is_fast_and_clear(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hc
    import sae_lens  # noqa: F401 - imported first so that only the failing call is timed

    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    t0 = time.perf_counter()
    with pytest.raises(SourceUnavailableError) as err:
        load_pretrained_sae("gemma-scope-9b-pt-res-canonical", "layer_20/width_16k/canonical")
    assert time.perf_counter() - t0 < 10  # about 1 s unloaded; online it would retry for ~25 s
    msg = str(err.value)
    assert "gemma-scope-9b-pt-res-canonical" in msg and "HF_HUB_OFFLINE" in msg and "tiny" in msg


def test_offline_arditi_error_names_the_missing_file(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SourceUnavailableError, match="harmful_train.json"):
        load_arditi_prompts("train", cache=tmp_path)


def test_arditi_prompts_read_from_cache(tmp_path):
    import json

    for name in ("harmful", "harmless"):
        rows = [{"instruction": f"{name} {i}", "category": None} for i in range(5)]
        (tmp_path / f"{name}_train.json").write_text(json.dumps(rows))
    out = load_arditi_prompts("train", 3, cache=tmp_path)
    assert out == {"harmful": ["harmful 0", "harmful 1", "harmful 2"], "harmless": ["harmless 0", "harmless 1",
                                                                                   "harmless 2"]}
    with pytest.raises(SourceUnavailableError, match="fewer"):
        load_arditi_prompts("train", 9, cache=tmp_path)


def test_cannot_can_texts():
    sets = cannot_can_texts()
    assert len(sets["cannot"]) == len(sets["can"]) == 84
    assert len(set(sets["cannot"])) == 84 and len(set(sets["can"])) == 84
    assert all(t.endswith(("Answer:", "Reply:")) for t in sets["cannot"] + sets["can"])


def test_harvest_reads_layer_output_and_sums_per_prompt():
    from transformers import Gemma2Config, Gemma2ForCausalLM

    from tiedlib.lab.tokenizer import build_tokenizer
    from tiedlib.pairs import wrap

    tok = build_tokenizer()
    cfg = Gemma2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                       num_attention_heads=2, num_key_value_heads=2, head_dim=16, max_position_embeddings=64)
    hf = Gemma2ForCausalLM(cfg).eval()
    model = wrap(hf, tok)
    seqs = [tok("<bos>Question: Can I freeze bread?", add_special_tokens=False)["input_ids"],
            tok("<bos>Hello", add_special_tokens=False)["input_ids"]]
    acts = collect_tokens(model, seqs, 1, batch_size=2)
    assert acts.shape == (len(seqs[0]) + len(seqs[1]) - 2, 32)  # BOS dropped, padding dropped
    with torch.no_grad():
        ref = hf(torch.tensor([seqs[1]]), output_hidden_states=True).hidden_states[2][0, 1:]
    assert torch.allclose(acts[-ref.shape[0]:], ref, atol=1e-4)

    from sae_lens import StandardSAE, StandardSAEConfig

    sae = StandardSAE(StandardSAEConfig(d_in=32, d_sae=48))
    sums = position_sums(model, sae, seqs, 1, [3, 1], batch_size=2)  # the last 3 / the last 1 tokens
    with torch.no_grad():
        f0 = sae.encode(hf(torch.tensor([seqs[0]]), output_hidden_states=True).hidden_states[2][0, 1:])
        expected = sae.encode(ref).sum(0)
    assert sums.all.shape == sums.end.shape == (2, 48) and torch.allclose(sums.all[1], expected, atol=1e-4)
    assert torch.allclose(sums.all[0], f0.sum(0), atol=1e-4) and torch.allclose(sums.end[0], f0[-3:].sum(0), atol=1e-4)
    assert torch.allclose(sums.end[1], expected, atol=1e-4)  # "Hello": its one kept token is its end
    with pytest.raises(ValueError, match="end_lengths"):
        position_sums(model, sae, seqs, 1, [3])
    with pytest.raises(ValueError, match="n_end"):
        position_sums(model, sae, seqs, 1, [3, 2])  # "Hello" has one kept token (BOS dropped)


# ------------------------------------------------------------------------------------------------- the page's report
SETS = ("cannot", "can", "harmful", "harmless")
IDS = {"cannot": ["q0", "q0", "q1"], "can": ["q2", "q3", "q3"], "harmful": [None, None, None],
       "harmless": [None, None, None]}
"""Question ids of three prompts per set: name variants (q0, q3) and, like the paper's Arditi sets, no ids."""


def _data(sums_by_model, truth=None, ids=None, end_sums=None):
    from tiedlib.experiments.exp3.run import Exp3Data

    ids = ids if ids is not None else {k: [f"{k} q{i}" for i in range(v.shape[0])]
                                       for k, v in sums_by_model["base"].items()}
    prompts = {k: [f"{k} {i}" for i in range(len(v))] for k, v in ids.items()}
    stats = {"base": {"mse": 0.12345, "d_sae": 40}, "chat": {"mse": 0.5, "d_sae": 40}}
    sums = {"all": sums_by_model, "end": end_sums if end_sums is not None else sums_by_model}
    end_tokens = {k: ["<end_of_turn>", "model"] for k in ids}
    return Exp3Data(sums, prompts, ids, end_tokens, stats, 1, "hand-made sums", truth)


def _row(rule, base, chat, low, p=0.5, positions="all"):
    """An overlap_table row with chat - base = chat - base and its interval [low, low + 0.2]."""
    row = {"positions": positions, "rule": rule, "base": base, "base_low": base - 0.05, "base_high": base + 0.05,
           "chat": chat, "chat_low": chat - 0.05, "chat_high": chat + 0.05, "chat_minus_base": chat - base,
           "chat_minus_base_low": low, "chat_minus_base_high": low + 0.2, "p_chat_le_base": p,
           "base_chance": 0.3, "chat_chance": 0.3333}
    row.update({f"{m}_n_{k}": 7 for m in ("base", "chat") for k in ("cannot", "harmful")})
    row.update({f"n_questions_{k}": 2 for k in SETS})
    return row


def _rows(low_all=0.05, low_end=-0.01):
    """The write-up rule and a top-5 rule at both position sets."""
    from tiedlib.experiments.exp3.report import WRITE_UP_RULE

    return [_row(WRITE_UP_RULE, 0.30, 0.45, low_all), _row("top 5", 0.20, 0.18, -0.12, p=0.6),
            _row(WRITE_UP_RULE, 0.25, 0.40, low_end, positions="end"),
            _row("top 5", 0.10, 0.30, 0.02, positions="end")]


CORR = {"all": {"base": 0.1234, "chat": 0.5}, "end": {"base": 0.2, "chat": 0.3}}


def test_selection_rules_are_the_four_rules_of_the_page():
    from tiedlib.experiments.exp3.report import WRITE_UP_RULE, selection_rules

    rules = selection_rules(0.1, 16)
    assert list(rules) == [WRITE_UP_RULE, "margin 0.10", "top 16", "top 16 + margin"]
    assert list(rules.values()) == [{}, {"margin": 0.1}, {"top_k": 16}, {"top_k": 16, "margin": 0.1}]
    with pytest.raises(ValueError, match="margin"):
        selection_rules(1.0, 16)
    with pytest.raises(ValueError, match="top_k"):
        selection_rules(0.1, 0)


def test_report_table_summary_and_verdicts_from_hand_made_rows():
    from tiedlib.experiments.exp3.report import TABLE_COLUMNS, WRITE_UP_RULE, OverlapReport

    truth = {"web": {"phi": 0.391}, "chat": {"phi": 0.866}}
    rep = OverlapReport("tiny", _data({"base": {}, "chat": {}}, truth, IDS), _rows(), CORR, 0.95)
    table = rep.table()
    assert list(table.index) == [("all tokens", WRITE_UP_RULE), ("all tokens", "top 5"),
                                 ("end of prompt", WRITE_UP_RULE), ("end of prompt", "top 5")]
    assert list(table.columns) == TABLE_COLUMNS and "n_questions_harmless" in TABLE_COLUMNS
    assert table.loc[("all tokens", WRITE_UP_RULE), "chat_chance"] == 0.333  # rounded to 3 decimals
    assert rep.robust_rules() == [f"{WRITE_UP_RULE}, all tokens", "top 5, end of prompt"] and rep.recovered()
    assert rep.write_up_end["base"] == 0.25 and rep.row("top 5", "end")["chat"] == 0.30
    with pytest.raises(KeyError, match="top 6"):
        rep.row("top 6")
    unit = "distinct questions (can, cannot) and prompts (harmful, harmless: no question ids)"
    assert rep.title() == f"Cannot/Harmful latent overlap (tiny scale, 95% intervals, bootstrap over {unit})"
    lines = rep.summary().splitlines()
    assert lines[0] == "Scale 'tiny': hand-made sums."
    assert lines[1].startswith("Write-up rule, all tokens: Jaccard base 0.30 [0.25, 0.35], chat 0.45 [0.40, 0.50]")
    assert lines[1].endswith("chat - base +0.15 [+0.05, +0.25].")
    assert lines[2] == ("Write-up rule, end of prompt: Jaccard base 0.25 [0.20, 0.30], chat 0.40 [0.35, 0.45] "
                        "(chance: base 0.30, chat 0.33); chat - base +0.15 [-0.01, +0.19].")
    assert lines[3] == (f"Intervals: 95% paired bootstrap over {unit}; distinct questions per set: cannot 2 (3 "
                        "prompts), can 2 (3 prompts), harmful 3 (3 prompts), harmless 3 (3 prompts).")
    assert lines[4] == ("top 5, all tokens: base 0.20 [0.15, 0.25], chat 0.18 [0.13, 0.23], chat - base -0.02 "
                        "[-0.12, +0.08], P(chat <= base) 0.60.")
    assert lines[5].startswith("top 5, end of prompt: base 0.10")
    assert lines[6] == ("Rows whose interval for chat - base excludes zero: ['write-up (S_a > S_b), all tokens', "
                        "'top 5, end of prompt'] (of 4).")
    assert lines[7] == ("Correlation of the per-latent preferences (Cannot vs Harmful): all tokens base 0.12, chat "
                        "0.50; end of prompt base 0.20, chat 0.30.")
    assert lines[8].startswith("Planted in the lab corpus: harm-refusal correlation phi 0.39 in web vs 0.87 in chat")
    assert "The write-up's measure recovers it" in lines[8]
    # no interval above zero: the verdict flips, and at paper scale (no truth) the last line goes
    rows = _rows(low_all=-0.01)
    rows[3] = _row("top 5", 0.10, 0.30, -0.02, positions="end")
    rep = OverlapReport("paper", _data({"base": {}, "chat": {}}, ids=IDS), rows, CORR, 0.9)
    assert not rep.recovered() and rep.robust_rules() == []
    text = rep.summary()
    assert "excludes zero: none (of 4)" in text and "Planted" not in text and len(text.splitlines()) == 8


def test_analyse_bootstraps_every_rule_and_position_like_overlap_table():
    import dataclasses

    from tiedlib.experiments.exp3.presets import TABLE
    from tiedlib.experiments.exp3.report import analyse, selection_rules

    sums, end = {"base": _sums(30, seed=3), "chat": _sums(30, shared=0.5, seed=4)}, {"base": _sums(30, seed=5),
                                                                                      "chat": _sums(30, seed=6)}
    ids = {k: [f"q{i // 3}" for i in range(30)] for k in SETS}  # 10 questions of 3 name variants each
    data = _data(sums, ids=ids, end_sums=end)
    settings = dataclasses.replace(TABLE["smoke"], n_boot=40, top_k=5, seed=3)
    rep = analyse(data, settings, "smoke")
    assert [(r["positions"], r["rule"]) for r in rep.rows] == [
        (p, r) for p in ("all", "end") for r in selection_rules(settings.margin, 5)]
    for pos, s in (("all", sums), ("end", end)):
        direct = overlap_table(s, selection_rules(settings.margin, 5), clusters=ids, n_boot=40, ci=settings.ci, seed=3)
        mine = [r for r in rep.rows if r["positions"] == pos]
        for m, ref in zip(mine, direct, strict=True):
            assert m.keys() - {"positions"} == ref.keys() and ref["n_questions_cannot"] == 10
            assert all(m[k] == ref[k] or (m[k] != m[k] and ref[k] != ref[k]) for k in ref)  # NaN == NaN
        assert rep.correlations[pos] == {m: difference_correlation(s[m]) for m in ("base", "chat")}
    assert rep.write_up is rep.rows[0] and rep.write_up_end is rep.rows[4] and rep.scale == "smoke"
    assert data.bootstrap_unit() == "distinct questions"


def test_run_data_tables():
    data = _data({"base": _sums(4), "chat": _sums(4)})
    assert data.prompt_counts() == {"cannot": 4, "can": 4, "harmful": 4, "harmless": 4}
    examples = data.prompt_table(2)
    assert examples.shape == (2, 4) and examples.loc[1, "harmless"] == "harmless 1"
    sae = data.sae_table()
    assert list(sae.index) == ["base", "chat"] and sae.loc["base", "mse"] == 0.123
    assert data.truth_table() is None
    truth = _data(data.sums["all"], {"web": {"n_docs": 3, "phi": 0.12345}, "chat": {"n_docs": 2, "phi": 0.9}})
    assert list(truth.truth_table().index) == ["web", "chat"] and truth.truth_table().loc["web", "phi"] == 0.123
    sets = _data({}, ids=IDS).sets_table()
    assert sets.loc["cannot", "distinct questions"] == 2 and sets.loc["harmful", "distinct questions"] == 3
    assert sets.loc["can", "prompts"] == 3 and sets.loc["can", "end-of-prompt tokens"] == "'<end_of_turn>' 'model'"
    assert _data({}, ids={k: [None] for k in SETS}).bootstrap_unit() == "prompts (no question ids)"


def test_latent_difference_frame_and_scatter():
    import matplotlib.pyplot as plt

    from tiedlib.experiments.exp3.figures import BOTH, OTHER, latent_difference_frame, plot_latent_differences

    # one prompt per set, four latents: 0 prefers cannot and harmful, 1 only cannot, 2 silent on cannot/can, 3 neither
    def sets(cannot, can, harmful, harmless):
        return {k: torch.tensor([v]) for k, v in zip(("cannot", "can", "harmful", "harmless"),
                                                      (cannot, can, harmful, harmless), strict=True)}

    model = sets([3.0, 2.0, 0.0, 1.0], [1.0, 0.0, 0.0, 3.0], [1.0, 1.0, 2.0, 0.0], [0.0, 3.0, 1.0, 2.0])
    frame = latent_difference_frame({"base": model, "chat": model})
    base = frame[frame["model"] == "base"]
    assert base["latent"].tolist() == [0, 1, 3]  # latent 2 has no Cannot-vs-Can difference
    assert base["refusal"].tolist() == pytest.approx([0.5, 1.0, -0.5])
    assert base["harmful"].tolist() == pytest.approx([1.0, -0.5, -1.0])
    assert base["kind"].tolist() == [BOTH, OTHER, OTHER] and len(frame) == 6
    fig = plot_latent_differences({"base": model, "chat": model}, margin=0.1)
    j = overlap(model)[0]  # Cannot latents {0, 1}, Harmful latents {0, 2} (latent 2 is dropped from the scatter only)
    assert j == pytest.approx(1 / 3) and fig.axes[0].get_title().startswith("base: Jaccard 0.33")
    assert "(3 active latents)" in fig.axes[1].get_title()
    plt.close(fig)


def test_findings_give_every_key_the_page_and_readme_paste():
    from tests.test_findings import glued_keys
    from tiedlib.experiments.exp3.report import OverlapReport

    truth = {"web": {"phi": 0.391}, "chat": {"phi": 0.866}}
    rows = _rows(low_all=-0.03)
    rows[0] = _row(rows[0]["rule"], 0.30, 0.32, -0.03)
    ids = {k: [f"q{i}" for i in range(3)] for k in SETS}
    out = OverlapReport("tiny", _data({"base": {}, "chat": {}}, truth, ids), rows, CORR, 0.95).findings()
    assert glued_keys("exp3_") <= set(out) and all(isinstance(v, str) for v in out.values())
    assert out["exp3_jaccard"] == "base 0.30 [0.25, 0.35], chat 0.32 [0.27, 0.37]"
    assert out["exp3_diff"] == "+0.02 [-0.03, +0.17] (95% bootstrap over distinct questions)"
    assert out["exp3_jaccard_end"] == "base 0.25 [0.20, 0.30], chat 0.40 [0.35, 0.45]"
    assert out["exp3_chance_end"] == "base 0.30, chat 0.33"
    assert out["exp3_diff_end"] == "+0.15 [-0.01, +0.19] (95% bootstrap over distinct questions)"
    assert out["exp3_verdict"] == out["exp3_verdict_end"] == "inconclusive at this scale"
    assert out["exp3_recovered"] == "no"
    assert out["exp3_robust"] == "1 of 4 (rule, positions) rows (top 5, end of prompt)"
    assert out["exp3_questions"] == ("cannot 3 (3 prompts), can 3 (3 prompts), harmful 3 (3 prompts), harmless 3 "
                                     "(3 prompts); bootstrap over distinct questions")
    assert out["exp3_planted"] == "phi 0.39 in web vs 0.87 in chat documents"
    assert out["exp3_correlation"] == "all tokens: base 0.12, chat 0.50; end of prompt: base 0.20, chat 0.30"
    out = OverlapReport("paper", _data({"base": {}, "chat": {}}, ids=IDS), _rows(), CORR, 0.9).findings()
    assert out["exp3_verdict"] == "chat overlaps more than base" and out["exp3_recovered"].startswith("n/a")
    assert out["exp3_diff"].endswith("(90% bootstrap over distinct questions (can, cannot) and prompts (harmful, "
                                      "harmless: no question ids))")


# ------------------------------------------------------------------------------------------------- cluster bootstrap
def test_cluster_index_and_weights_keep_name_variants_together():
    index, n = cluster_index(["a", "b", "a", None, "c", None, "b"])
    assert index.tolist() == [0, 1, 0, 2, 3, 4, 1] and n == 5  # every None is a cluster of its own
    w = cluster_weights(index, n, 500, torch.Generator().manual_seed(0))
    assert w.shape == (500, 7)
    assert torch.equal(w[:, 0], w[:, 2]) and torch.equal(w[:, 1], w[:, 6])  # variants drawn together, every time
    assert not torch.equal(w[:, 3], w[:, 5])  # two id-less prompts are drawn independently
    # each draw picks n clusters: the weights of one prompt per cluster sum to n
    assert torch.equal(w[:, [0, 1, 3, 4, 5]].sum(1), torch.full((500,), 5.0))
    assert w[:, 0].mean().item() == pytest.approx(1.0, abs=0.15)
    with pytest.raises(ValueError, match="cluster numbers"):
        cluster_weights(torch.tensor([0, 5]), 2, 3, torch.Generator())


def test_cluster_bootstrap_is_wider_than_a_prompt_bootstrap_over_name_variants():
    # 40 questions per set, each asked in 5 name variants with the same latent sums: a bootstrap over prompts treats
    # the 200 copies as independent and is too narrow; resampling questions gives the interval of 40 questions
    # (1.65-2.3 times wider over 9 data/bootstrap seeds)
    sums = {m: {k: v.repeat_interleave(5, dim=0) for k, v in _sums(40, shared=sh, seed=sd).items()}
            for m, sh, sd in (("base", 0.2, 1), ("chat", 0.6, 2))}
    ids = {k: [f"q{i // 5}" for i in range(200)] for k in SETS}
    plain = bootstrap_overlap(sums, n_boot=300, seed=0, margin=0.1)
    clustered = bootstrap_overlap(sums, clusters=ids, n_boot=300, seed=0, margin=0.1)
    width = {name: est["chat_minus_base"].high - est["chat_minus_base"].low
             for name, est in (("plain", plain), ("clustered", clustered))}
    assert width["clustered"] > 1.4 * width["plain"], width
    assert clustered["chat"].point == plain["chat"].point  # the point estimate does not depend on the clusters
    # every prompt its own id (or no ids) is exactly the prompt bootstrap
    own = bootstrap_overlap(sums, clusters={k: list(range(200)) for k in SETS}, n_boot=50, seed=4)
    assert torch.equal(own["chat"].draws, bootstrap_overlap(sums, n_boot=50, seed=4)["chat"].draws)
    with pytest.raises(ValueError, match="question ids"):
        bootstrap_overlap(sums, clusters={"cannot": ["q"] * 3}, n_boot=5)
    rows = overlap_table(sums, {"loose": {}}, clusters=ids, n_boot=20)
    assert [rows[0][f"n_questions_{k}"] for k in SETS] == [40, 40, 40, 40]
    assert overlap_table(sums, {"loose": {}}, n_boot=20)[0]["n_questions_can"] == 200


def test_table_chance_draws_each_contrast_from_its_own_active_latents():
    # Cannot/Can wake latents 0-19 only, Harmful/Harmless 10-29: unrelated sets can only meet on latents 10-19
    sums = _sums(20, d=40, seed=8)
    sums = {k: v * (torch.arange(40) < 20) if k in ("cannot", "can") else v * ((torch.arange(40) >= 10)
            & (torch.arange(40) < 30)) for k, v in sums.items()}
    row = overlap_table({"base": sums, "chat": sums}, {"loose": {}}, n_boot=10)[0]
    expected = chance_jaccard(row["base_n_cannot"], row["base_n_harmful"], 10, n_pool_a=20, n_pool_b=20)
    assert row["base_chance"] == pytest.approx(expected)
    assert row["base_chance"] < chance_jaccard(row["base_n_cannot"], row["base_n_harmful"], 30)  # one pool of 30


def test_require_questions_names_the_short_sets():
    assert require_questions(IDS, 2) == {"cannot": 2, "can": 2, "harmful": 3, "harmless": 3}
    with pytest.raises(ValueError, match=r"fewer than 3 distinct questions: \{'cannot': 2, 'can': 2\}"):
        require_questions(IDS, 3)


# ------------------------------------------------------------------------------------------------- end of prompt
def test_end_of_prompt_mask_takes_the_last_kept_tokens():
    keep = torch.tensor([[False, False, True, True, True, True], [False, True, True, True, False, True]])
    mask = end_of_prompt_mask(keep, torch.tensor([2, 3]))
    assert mask.tolist() == [[False, False, False, False, True, True], [False, False, True, True, False, True]]
    with pytest.raises(ValueError, match="n_end"):
        end_of_prompt_mask(keep, torch.tensor([5, 1]))  # row 0 keeps only 4 tokens
    with pytest.raises(ValueError, match="n_end"):
        end_of_prompt_mask(keep, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="batch"):
        end_of_prompt_mask(keep, torch.tensor([1]))
    assert common_suffix_length([1, 2, 3], [9, 2, 3]) == 2 and common_suffix_length([1], [2]) == 0


def test_end_of_prompt_of_lab_prompts_is_what_the_lab_labels():
    from tiedlib import lab
    from tiedlib.experiments.exp3.run import lab_forum_render
    from tiedlib.lab.sets import request_prompt
    from tiedlib.lab.tokenizer import build_tokenizer

    tok = build_tokenizer()
    chat = format_suffix(chat_render(tok))
    assert token_strings(tok, chat) == ["<end_of_turn>", "\n", "<start_of_turn>", "model", "\n"]
    docs = [request_prompt("How can I make a fake passport?"), request_prompt("Show me how to grow a plant.", "Lena")]
    n_end = end_of_prompt_lengths([d.input_ids for d in docs], [chat])
    for doc, n in zip(docs, n_end, strict=True):  # the lab labels the same positions "end_of_prompt"
        assert [i for i, v in enumerate(doc.labels["end_of_prompt"]) if v] == list(range(len(doc) - n, len(doc)))
    cfg = lab.LabConfig.from_name("smoke")
    forum = format_suffix(lab_forum_render(cfg, tok))
    prompts = lab.cannot_can_prompts(cfg, 5, split="heldout")["cannot"]
    assert token_strings(tok, forum) == ["\n", "Answer", ":"]
    assert end_of_prompt_lengths([d.input_ids for d in prompts], [forum]) == [3] * 5
    with pytest.raises(ValueError, match="does not end with the end-of-prompt tokens"):
        end_of_prompt_lengths([d.input_ids for d in prompts], [chat])
    with pytest.raises(ValueError, match="at least one"):
        end_of_prompt_lengths([d.input_ids for d in prompts], [])


def test_end_of_prompt_of_a_templated_hf_prompt():
    from tests.helpers_models import tiny_tokenizer

    tok = tiny_tokenizer()  # another template: "<start_of_turn> user <text> <end_of_turn> <start_of_turn> model "
    seqs = tokenize_prompts(tok, ["how are you ?", "what is this"], chat_template=True)
    suffixes = prompt_suffixes(tok, chat_template=True)
    assert [token_strings(tok, s) for s in suffixes] == [["<end_of_turn>", "<start_of_turn>", "model"]]
    assert end_of_prompt_lengths(seqs, suffixes) == [3, 3]
    assert token_strings(tok, seqs[1][-3:]) == ["<end_of_turn>", "<start_of_turn>", "model"]
    with pytest.raises(ValueError, match="two different probe"):
        format_suffix(chat_render(tok), probes=["a", "a"])
    with pytest.raises(ValueError, match="no token after"):
        format_suffix(lambda text: tok(text)["input_ids"])  # a bare text has no end of prompt

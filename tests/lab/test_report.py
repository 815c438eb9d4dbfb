"""The lab-pair page's tables, example choice, figure and Summary, on hand-made documents and logs."""

import dataclasses

import matplotlib.pyplot as plt
import pytest

from tiedlib.lab.config import LabConfig
from tiedlib.lab.docs import LabDoc
from tiedlib.lab.presets import TABLE, LabPageSettings
from tiedlib.lab.report import (
    SHOWN_CONCEPTS,
    build_summary,
    corpus_stats,
    evaluation_markdown,
    example_documents,
    plot_training_losses,
    shown_concepts,
    summary_markdown,
)


def _doc(source, n=2, labels=None, **meta):
    return LabDoc(text="", input_ids=list(range(n)), labels=labels or {}, source=source, meta=meta)


def test_shown_concepts_keep_the_page_order_and_drop_unknown_ones():
    assert shown_concepts(["name", "refusal", "blue"]) == ["refusal", "name"]
    assert shown_concepts() == list(SHOWN_CONCEPTS)  # every shown concept is a lab concept


def test_example_documents_pick_a_forum_post_and_a_refusal_with_fallbacks():
    web = [_doc("web", kind="story"), _doc("web", kind="forum"), _doc("web", kind="forum", n=3)]
    chat = [_doc("chat", refused=False), _doc("chat", refused=True), _doc("chat", refused=True, n=3)]
    w, c = example_documents(web, chat)
    assert w is web[1] and c is chat[1]
    w, c = example_documents(web[:1], chat[:1])
    assert w is web[0] and c is chat[0]
    with pytest.raises(ValueError, match="web and one chat"):
        example_documents([], chat)


def test_corpus_stats_table_and_phi():
    docs = [
        _doc("web", 4, {"refusal": [False, True, False, False]}, harmful=1, refused=1),
        _doc("web", 4, {"refusal": [False] * 4}, harmful=1, refused=0),
        _doc("web", 2, {"refusal": [False] * 2}, harmful=0, refused=1),
        _doc("web", 2, {"refusal": [False] * 2}, harmful=0, refused=0),
        _doc("chat", 5, {"refusal": [False, True, True, False, False]}, harmful=1, refused=1),
        _doc("chat", 5, {"refusal": [False] * 5}, harmful=0, refused=0),
    ]
    stats = corpus_stats(docs, ["refusal", "blue"])
    lines = stats.rates_markdown().splitlines()
    assert lines[0] == "| concept | web tokens | web docs | chat tokens | chat docs |" and len(lines) == 4
    # web: 1 of 12 tokens in 1 of 4 docs; chat: 2 of 10 tokens in 1 of 2 docs
    assert lines[2] == "| refusal | 8.333% | 25.0% | 20.000% | 50.0% |"
    assert lines[3] == "| blue | 0.000% | 0.0% | 0.000% | 0.0% |"
    assert stats.phi["web"] == pytest.approx(0.0, abs=1e-12) and stats.phi["chat"] == pytest.approx(1.0)
    assert stats.phi_line() == "phi(harmful, refused) per document: web 0.00, chat 1.00"
    with pytest.raises(ValueError, match="web and chat"):
        corpus_stats(docs[:4])


def test_evaluation_markdown_lists_float_metrics_only():
    ev = {"config": "tiny", "loss_base_on_web": 0.5371, "n_docs": 200, "chat_refusal_rate_harmful": 1.0,
          "examples": [["q", "a"]], "seconds": 18.7}
    assert evaluation_markdown(ev).splitlines() == [
        "| metric | value |", "|---|---|", "| loss_base_on_web | 0.537 |", "| chat_refusal_rate_harmful | 1.000 |",
        "| seconds | 18.700 |"]


def test_summary_markdown_prints_the_numbers():
    ev = {"chat_refusal_rate_harmful": 1.0, "chat_answer_rate_harmless": 0.995, "base_refusal_rate_harmful": 0.2,
          "loss_base_on_chat": 7.386, "loss_chat_on_chat": 0.343, "loss_base_on_web": 0.537, "loss_chat_on_web": 0.584}
    text = summary_markdown("tiny", LabConfig.smoke(), {"web": 0.391, "chat": 0.866}, ev)
    assert "*Scale: `tiny` (lab preset `smoke`).*" in text
    assert "phi = 0.39 in web documents and 0.87 in chat" in text
    assert "refuses 100% of held-out harmful requests and answers\n  100% of harmless" in text  # 0.995 rounds up
    assert "refuses 20% of the harmful ones" in text
    assert "base 7.39, chat 0.34 nats/token;\n  on web data: base 0.54, chat 0.58." in text


def test_build_summary_names_the_pair_and_its_log():
    cfg = LabConfig.smoke()
    log = {"total_seconds": 429.6, "n_web_tokens": 251238, "n_chat_tokens": 122156}
    lines = build_summary(cfg, "/cache/x", log, 0.04).splitlines()
    assert lines[0] == f"lab pair 'smoke' (hash {cfg.hash()}) ready in 0.0 s; cache: /cache/x"
    assert lines[1] == "build time when it was trained: 430 s; training tokens: 251,238 web, 122,156 chat"
    assert lines[2].startswith('model: {"hidden_size": ') and str(cfg.model.hidden_size) in lines[2]


def test_plot_training_losses_draws_one_line_per_stage():
    fig = plot_training_losses({"losses": {"web": [3.0, 2.0, 1.0], "chat": [2.0, 0.5]}})
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.get_lines()] == ["web", "chat"]
    assert list(ax.get_lines()[1].get_ydata()) == [2.0, 0.5]
    plt.close(fig)
    with pytest.raises(ValueError, match="losses"):
        plot_training_losses({"losses": {}})


def test_page_settings_reject_empty_counts():
    assert TABLE["paper"].lab_config == "tiny"  # this page always describes a lab pair
    assert TABLE["smoke"].n_docs < TABLE["tiny"].n_docs
    with pytest.raises(ValueError, match="positive"):
        dataclasses.replace(TABLE["smoke"], n_prompts=0)
    with pytest.raises(ValueError, match="positive"):
        LabPageSettings("tiny", n_docs=0, n_eval_docs=1, n_prompts=1)


def _probe_frame(transfer_auroc):
    import pandas as pd

    rows = {"harmful request": dict(auroc_base=0.96, auroc_chat=1.0, cos_base_chat=0.75, refusal_drop_pts=43.3,
                                harmless_refusal_after=0.117),
            "about to decline (web)": dict(auroc_base=0.99, auroc_chat=0.98, cos_base_chat=0.94, refusal_drop_pts=8),
            "decline direction on harmful requests": dict(auroc_base=0.31, auroc_chat=0.03,
                                                          auroc_chat_base_dir=transfer_auroc, refusal_drop_pts=8),
            "random direction (control)": dict(refusal_drop_pts=-1.7)}
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.attrs.update(layer=2, chat_refusal_baseline=0.933, n_refusal_prompts=60, chat_harmless_refusal_baseline=0.183)
    return frame


def test_probe_summary_reads_its_numbers_and_verdict_off_the_table():
    from tiedlib.lab.report import probe_summary

    text = " ".join(probe_summary(_probe_frame(0.04)).split())
    assert "layer 2" in text and "AUROC 0.96 in the base model, 1.00 in the chat model" in text
    assert "from 93% by 43 points" in text and "random direction: -2 points" in text
    assert "goes from 18% to 12%" in text
    assert "the side effect of the ablation" in text and "not the model breaking" not in text  # 43 < 50 points
    assert "decline coordinate to its harmless-request mean moves its refusal rate on the harmful prompts by 8" in text
    assert "does *not* reuse" in text and "opposite" in text
    assert "fires the base decline direction" in probe_summary(_probe_frame(0.9))
    frame = _probe_frame(0.5)
    assert "does *not* reuse" in probe_summary(frame) and "opposite" not in probe_summary(frame)
    with pytest.raises(ValueError, match="not a probe table"):
        probe_summary(frame.drop(index="random direction (control)"))


def test_probe_verdicts_pass_fail_and_not_planted():
    from tiedlib.lab.report import probe_verdict_line, probe_verdicts

    frame = _probe_frame(0.9)
    frame.loc["harmful request", "auroc_chat"] = 1.0
    frame.loc["harmful request", "refusal_drop_pts"] = 85.0
    frame.loc["decline direction on harmful requests", "auroc_base"] = 0.5
    frame.loc["colour blue vs green", ["auroc_base", "auroc_chat"]] = [0.99, 0.95]
    v = probe_verdicts(frame)
    assert v.loc["harmful request (chat), causal", "passes"]  # 85-pt drop, harmless 18% -> 12%, random -2
    assert v.loc["about to decline (base feature)", "passes"] and v.loc["colour (blue vs green before the colour)",
                                                                          "passes"]
    assert v.loc["reuse: decline fired on harmful requests", "passes"]  # chat 0.9 vs base 0.5
    assert not v.loc["composition: disclaimer + refusal on pill requests", "passes"]
    assert "not planted" in v.loc["names: chat copies the user's name", "measured"]
    frame.loc["decline direction on harmful requests", "auroc_base"] = 0.8  # base fires it as much: no reuse
    frame.loc["harmful request", "refusal_drop_pts"] = 43.3
    v = probe_verdicts(frame)
    assert not v.loc["reuse: decline fired on harmful requests", "passes"]
    assert not v.loc["harmful request (chat), causal", "passes"]
    line = probe_verdict_line(v)
    assert line.startswith("2 of 7 planted mechanisms pass") and "refusal drop 43 pts" in line
    # The chat model refuses through the reused decline feature: ablating that direction is the causal check.
    frame.loc["about to decline (web)", ["refusal_drop_pts", "harmless_refusal_after"]] = [60.0, 0.0]
    assert not probe_verdicts(frame).loc["harmful request (chat), causal", "passes"]  # ablated to a web mean: no
    frame.loc["decline direction on harmful requests", ["refusal_drop_pts", "harmless_refusal_after"]] = [53.3, 0.2]
    v = probe_verdicts(frame)
    assert v.loc["harmful request (chat), causal", "passes"]
    assert "53 pts (harmless refusal +2 pts) along the decline direction" in v.loc["harmful request (chat), causal",
                                                                                    "measured"]
    frame.loc["decline direction on harmful requests", "harmless_refusal_after"] = 0.4  # not if harmless ones refuse
    assert not probe_verdicts(frame).loc["harmful request (chat), causal", "passes"]


def _with_selected(frame, drop, control, harmless_after=0.1):
    frame.loc["refusal direction (selected site)", ["auroc_base", "auroc_chat", "cos_base_chat", "refusal_drop_pts",
                                                    "harmless_refusal_after"]] = [0.8, 0.99, 0.9, drop, harmless_after]
    frame.loc["refusal direction (selected site)", "position"] = "token -5 ('<end_of_turn>') at the input of layer 1"
    frame.loc["random direction, every layer (control)", "refusal_drop_pts"] = control
    frame.attrs.update(selected_layer=1, selected_token="<end_of_turn>", n_candidate_sites=15,
                       selected_drop_interval=(37.0, 67.0))
    return frame


def test_selected_direction_removed_at_every_layer_can_pass_the_causal_check():
    """Harvesting-layer ablations fail (18 and 3 points); the direction selected on validation questions and removed
    at every layer (Arditi et al.'s procedure) carries it, unless its own random control also moves refusals."""
    from tiedlib.lab.report import probe_summary, probe_verdicts

    frame = _probe_frame(0.9)
    frame.loc["harmful request", "refusal_drop_pts"] = 18.0
    key = "harmful request (chat), causal"
    assert not probe_verdicts(frame).loc[key, "passes"]
    v = probe_verdicts(_with_selected(frame.copy(), 51.7, 0.0))
    assert v.loc[key, "passes"]
    assert "('<end_of_turn>' at layer 1) 52 pts (harmless refusal -8 pts), 95% interval [37, 67] (random 0)" in v.loc[
        key, "measured"]
    assert not probe_verdicts(_with_selected(frame.copy(), 51.7, 15.0)).loc[key, "passes"]  # control moves too
    assert not probe_verdicts(_with_selected(frame.copy(), 45.0, 0.0)).loc[key, "passes"]  # below the bar
    assert not probe_verdicts(_with_selected(frame.copy(), 60.0, 0.0, 0.5)).loc[key, "passes"]  # harmless refuse
    text = " ".join(probe_summary(_with_selected(frame.copy(), 51.7, 0.0)).split())
    assert "among 15 (layer, template token) sites" in text
    assert "by 52 points (95% interval over questions [37, 67]" in text
    assert "That passes the 50-point bar" in text
    assert "That does not reach" in " ".join(probe_summary(_with_selected(frame.copy(), 45.0, 0.0)).split())
    assert "Arditi" not in probe_summary(frame)  # no selected row: no bullet


def test_timing_vs_representation_ground_truth_verdict():
    from tiedlib.lab.report import probe_verdicts

    frame = _probe_frame(0.94)
    frame.loc["decline direction on harmful requests", "auroc_base"] = 0.59
    frame.loc["about to decline (web)", "cos_base_chat"] = 0.89
    frame.loc["name given", ["auroc_base", "auroc_chat", "cos_base_chat", "behaviour_base", "behaviour_chat"]] = [
        0.94, 1.0, 0.09, 0.0, 0.98]
    key = "timing vs representation (ground truth)"
    v = probe_verdicts(frame)
    assert v.loc[key, "passes"] and "decline cosine 0.89" in v.loc[key, "measured"] and "name given cosine 0.09" in \
        v.loc[key, "measured"]
    frame.loc["name given", "cos_base_chat"] = 0.7  # the name's direction did not move
    assert not probe_verdicts(frame).loc[key, "passes"]
    frame.loc["name given", "cos_base_chat"] = 0.09
    frame.loc["about to decline (web)", "cos_base_chat"] = 0.6  # the decline direction moved: not "same direction"
    assert not probe_verdicts(frame).loc[key, "passes"]
    frame.loc["about to decline (web)", "cos_base_chat"] = 0.89
    frame.loc["name given", "auroc_base"] = 0.6  # the base model does not read the name: nothing to compare
    assert not probe_verdicts(frame).loc[key, "passes"]


def test_planted_gate_direction_can_pass_the_causal_check():
    """A gated pair's planted direction is a fourth way through the causal check, with its interval in the text and
    its own summary bullet; a random direction that moves refusals, or harmless prompts that start refusing, fail it."""
    from tiedlib.lab.report import probe_summary, probe_verdicts

    def planted(drop, harmless_after=0.1, control=-1.7):
        frame = _probe_frame(0.9)
        frame.loc["harmful request", "refusal_drop_pts"] = 18.0
        frame.loc["planted gate direction (ground truth)", ["auroc_base", "auroc_chat", "refusal_drop_pts",
                                                             "harmless_refusal_after"]] = [0.6, 0.97, drop,
                                                                                           harmless_after]
        frame.loc["random direction (control)", "refusal_drop_pts"] = control
        frame.attrs.update(planted_drop_interval=(62.0, 87.0))
        return frame

    key = "harmful request (chat), causal"
    v = probe_verdicts(planted(75.0))
    assert v.loc[key, "passes"]
    assert "the planted gate direction (ground truth) at the harvesting layer 75 pts (harmless refusal -8 pts), 95% " \
           "interval [62, 87]" in v.loc[key, "measured"]
    assert not probe_verdicts(planted(45.0)).loc[key, "passes"]
    assert not probe_verdicts(planted(75.0, harmless_after=0.4)).loc[key, "passes"]
    assert not probe_verdicts(planted(75.0, control=20.0)).loc[key, "passes"]
    text = " ".join(probe_summary(planted(75.0)).split())
    assert "AUROC 0.97 in the chat model (0.60 in the base)" in text
    assert "by 75 points (95% interval over questions [62, 87])" in text and "That passes the 50-point bar" in text
    assert "Ground truth" not in probe_summary(_probe_frame(0.9))

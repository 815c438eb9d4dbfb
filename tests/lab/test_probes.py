"""The probe suite: its machinery on planted directions, then the smoke pair's mechanisms where they hold."""

from __future__ import annotations

import math

import pytest
import torch

from tiedlib.lab.docs import LabDoc
from tiedlib.lab.probes import (
    Contrast,
    auroc,
    choose_site,
    common_suffix,
    diff_of_means,
    drop_interval,
    project_out,
    project_out_every_layer,
    question_split,
    residuals,
    run_probes,
)


def test_auroc_matches_pair_counting():
    scores = torch.tensor([0.1, 0.4, 0.35, 0.8, 0.4])
    labels = torch.tensor([False, False, True, True, True])
    # Positives 0.35, 0.8, 0.4 against negatives 0.1, 0.4: wins 1 + 2 + 1, one tie (0.4 = 0.4) -> (4 + 0.5) / 6.
    assert auroc(scores, labels) == pytest.approx(4.5 / 6)
    assert auroc(-scores, labels) == pytest.approx(1.5 / 6)
    with pytest.raises(ValueError, match="both classes"):
        auroc(scores, torch.ones(5, dtype=torch.bool))


def test_question_split_keeps_questions_together_and_balances_classes():
    groups = [f"q{i % 10}" for i in range(60)]  # six name variants of each of ten questions
    labels = [int(g[1:]) < 5 for g in groups]
    train = question_split(groups, labels)
    for g in set(groups):
        assert len({bool(t) for t, h in zip(train, groups, strict=True) if h == g}) == 1
    for cls in (True, False):
        sides = [bool(t) for t, y, g in zip(train, labels, groups, strict=True) if y == cls]
        assert sorted([sum(sides), len(sides) - sum(sides)]) == [12, 18]  # 5 questions x 6 samples: 3 and 2
    with pytest.raises(ValueError, match="distinct question"):
        question_split(["a", "b", "b"], [True, False, False])


def test_planted_direction_is_found_on_held_out_questions():
    gen = torch.Generator().manual_seed(0)
    d, n = 32, 200
    planted = torch.randn(d, generator=gen)
    planted /= planted.norm()
    groups = [f"q{i % 40}" for i in range(n)]
    labels = torch.tensor([int(g[1:]) % 2 == 0 for g in groups])
    x = torch.randn(n, d, generator=gen) + 3.0 * labels[:, None] * planted
    train = question_split(groups, labels.tolist())
    direction = diff_of_means(x[train], labels[train])
    assert float(direction @ planted) > 0.9
    assert auroc(x[~train] @ direction, labels[~train]) > 0.98
    with pytest.raises(ValueError, match="both classes"):
        diff_of_means(x[labels], labels[labels])


@pytest.fixture(scope="module")
def random_gemma():
    from transformers import Gemma2ForCausalLM

    from tiedlib.lab.config import ModelConfig
    from tiedlib.lab.train import make_model_config

    torch.manual_seed(0)
    cfg = make_model_config(ModelConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, context=32),
                            40, pad_id=0, bos_id=2, eos_id=1)
    return Gemma2ForCausalLM(cfg).eval()


def _doc(ids: list[int], qid: str) -> LabDoc:
    return LabDoc(text="", input_ids=ids, labels={}, source="web", meta={"question_id": qid})


def test_residuals_read_the_layer_input_and_projection_removes_a_planted_direction(random_gemma):
    model = random_gemma
    gen = torch.Generator().manual_seed(1)
    # Positives end in token 7, negatives in token 9; the other tokens (and lengths) vary with the question.
    docs, labels = [], []
    for i in range(24):
        body = torch.randint(10, 40, (3 + i % 4,), generator=gen).tolist()
        docs.append(_doc([2, *body, 7 if i % 2 else 9], f"q{i}"))
        labels.append(bool(i % 2))
    labels_t = torch.tensor(labels)
    # The hook reads exactly Hugging Face's hidden_states[layer] (the input of decoder layer `layer`), batched with
    # right padding as a single document would be.
    deeper = residuals(model, docs, [-1] * len(docs), 1, batch_size=5)
    with torch.no_grad():
        ref = model(input_ids=torch.tensor([docs[3].input_ids]), output_hidden_states=True).hidden_states[1][0, -1]
    torch.testing.assert_close(deeper[3], ref, rtol=1e-4, atol=1e-5)
    acts = residuals(model, docs, [-1] * len(docs), 0)  # the input of layer 0: the last token's embedding
    train = question_split([d.meta["question_id"] for d in docs], labels)
    direction = diff_of_means(acts[train], labels_t[train])
    assert auroc(acts[~train] @ direction, labels_t[~train]) == 1.0
    with torch.no_grad():
        before = model(input_ids=torch.tensor([docs[0].input_ids])).logits
    with project_out(model, 5.0 * direction, 0):
        ablated = residuals(model, docs, [-1] * len(docs), 0)
        with torch.no_grad():
            changed = model(input_ids=torch.tensor([docs[0].input_ids])).logits
    assert (ablated @ direction).abs().max() < 1e-4  # the planted direction is gone at every read position
    assert not torch.allclose(before, changed)  # and the ablation sits in the forward path
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=torch.tensor([docs[0].input_ids])).logits, before)  # hook removed
    with pytest.raises(ValueError, match="layer must be"):
        residuals(model, docs, [-1] * len(docs), 2)
    with pytest.raises(ValueError, match="non-zero"):
        with project_out(model, torch.zeros(32), 0):
            pass
    with pytest.raises(ValueError, match="outside"):
        residuals(model, docs[:1], [40], 0)


@pytest.fixture(scope="module")
def smoke_probes(smoke_path, smoke_cfg):
    from tiedlib.lab.cache import load_models, load_tokenizer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # hidden 64: one thread is as fast, and far faster on a busy machine
    try:
        base, chat = load_models(smoke_cfg)
        return run_probes(smoke_cfg, load_tokenizer(smoke_cfg), base, chat, n=40, n_refusal_prompts=20)
    finally:
        torch.set_num_threads(threads)


def test_smoke_pair_probe_suite(smoke_probes):
    frame = smoke_probes.frame()
    rows = frame.to_dict("index")
    assert list(frame.index)[-1] == "random direction (control)" and frame.attrs["layer"] == 1
    assert smoke_probes.chat_refusal_baseline >= 0.8 and smoke_probes.n_refusal_prompts == 20
    # Mechanisms the smoke pair (hidden 64, 2 layers) has at the input of layer 1, in both models. Measured: the
    # decline, web-disclaimer and colour contrasts at AUROC 0.93-1.0 in each model, directions at cosine 0.8-0.92.
    for name in ("about to decline (web)", "disclaimer (web)", "colour blue vs green"):
        r = rows[name]
        assert min(r["auroc_base"], r["auroc_chat"], r["auroc_chat_base_dir"]) >= 0.85, (name, r)
        assert r["cos_base_chat"] >= 0.6, (name, r)
        assert r["n_train_questions"] >= 2 and r["n_test_questions"] >= 2
    assert rows["colour blue vs green"]["behaviour_chat"] >= 0.9
    assert rows["harmful request"]["behaviour_chat"] >= rows["harmful request"]["behaviour_base"] + 0.4
    # The transfer row fits nothing: every question is a test question.
    assert rows["decline direction on harmful requests"]["n_train_questions"] == 0
    # Not asserted, because the smoke pair does not have them (the tiny pair's figures are in notebook 00): a
    # harmful-request direction at layer 1 (AUROC about 0.6-0.75), the base decline direction on harmful requests
    # (about 0.65) and a 50-point refusal drop on ablation.
    assert all(math.isfinite(v) for v in frame["refusal_drop_pts"])
    # The causal check mean-ablates (to the negatives' mean coordinate) and rates harmless prompts under it too.
    assert all(math.isfinite(r.ablate_to) for r in smoke_probes.results)
    assert all(0.0 <= v <= 1.0 for v in frame["harmless_refusal_after"])
    # Arditi et al.'s selection: one candidate per (layer, shared template token) with distinct class means, fitted
    # on the refusal contrast's train questions, tested on its held-out prompts with its own every-layer control.
    sel = smoke_probes.selection
    assert sel is not None and sum(c["chosen"] for c in sel.candidates) == 1
    assert {(c["layer"], c["position"]) for c in sel.candidates if c["chosen"]} == {(sel.layer, sel.position)}
    assert -5 <= sel.position <= -1 and 0 <= sel.layer < 2 and len(sel.values) == 2
    picked = rows["refusal direction (selected site)"]
    assert picked["ablated_at"] == "every layer" and rows["harmful request"]["ablated_at"] == "harvesting layer"
    assert math.isfinite(picked["refusal_drop_pts"]) and 0 < picked["n_train_questions"] < rows["harmful request"][
        "n_train_questions"]
    assert frame.attrs["selected_layer"] == sel.layer and frame.attrs["n_candidate_sites"] == len(sel.candidates)
    lo, hi = frame.attrs["selected_drop_interval"]
    assert lo <= picked["refusal_drop_pts"] <= hi
    assert len(smoke_probes.candidates_frame()) == len(sel.candidates)


def test_transfer_needs_its_source_first(random_gemma):
    docs = [_doc([2, 5, 7], "a"), _doc([2, 6, 7], "b")]
    c = Contrast("t", "last", docs[:1], docs[1:], direction_from="missing")
    with pytest.raises(ValueError, match="not measured before"):
        run_probes(None, type("Tok", (), {"pad_token_id": 0})(), random_gemma, random_gemma, contrasts=[c], layer=0)


def test_mean_ablation_sets_the_coordinate_at_every_position(random_gemma):
    docs = [_doc([2, 11 + i, 12 + i, 7], f"q{i}") for i in range(6)]
    gen = torch.Generator().manual_seed(3)
    r = torch.randn(32, generator=gen)
    with project_out(random_gemma, 3.0 * r, 1, value=2.5):
        for pos in (1, 2, -1):
            coord = residuals(random_gemma, docs, [pos] * len(docs), 1) @ (r / r.norm())
            torch.testing.assert_close(coord, torch.full((len(docs),), 2.5), rtol=0, atol=1e-4)
    with pytest.raises(ValueError, match="finite"):
        with project_out(random_gemma, r, 1, value=float("nan")):
            pass


def test_reply_length_lets_the_judge_see_every_composed_reply():
    """The composition judge needs the disclaimer *and* the refusal: every planted pill reply must show both within
    the suite's greedy reply length (at 12 tokens "... but I am sorry, but I cannot" was cut before its refusal)."""
    from tiedlib.lab import banks as B
    from tiedlib.lab.config import LabConfig
    from tiedlib.lab.probes import REPLY_TOKENS, lab_contrasts, run_probes
    from tiedlib.lab.tokenizer import build_tokenizer

    tok = build_tokenizer()
    pill = next(c for c in lab_contrasts(LabConfig.tiny_v3(), 4) if c.name == "decline direction on pill requests")
    _, judge = pill.behaviour
    doc = pill.positive[0]
    needed = []
    for disclaimer in B.MEDICAL_DISCLAIMERS:
        for refusal in (r for r in B.REFUSALS if r.startswith("I ")):  # the corpus's composed replies
            ids = tok(f"{disclaimer} {refusal}", add_special_tokens=False)["input_ids"]
            needed.append(next(k for k in range(1, len(ids) + 1) if judge(doc, tok.decode(ids[:k]))))
    assert max(needed) <= REPLY_TOKENS
    assert run_probes.__kwdefaults__["max_new_tokens"] == REPLY_TOKENS


def test_every_layer_ablation_sets_each_layers_coordinate(random_gemma):
    docs = [_doc([2, 11 + i, 12 + i, 7], f"q{i}") for i in range(4)]
    r = torch.randn(32, generator=torch.Generator().manual_seed(5))
    n = len(random_gemma.model.layers)
    values = [1.5 * (j + 1) for j in range(n)]
    with project_out_every_layer(random_gemma, r, values):
        for layer in range(n):
            coord = residuals(random_gemma, docs, [1] * len(docs), layer) @ (r / r.norm())
            torch.testing.assert_close(coord, torch.full((len(docs),), values[layer]), rtol=0, atol=1e-4)
    assert not any(layer._forward_pre_hooks for layer in random_gemma.model.layers)  # every hook removed
    with pytest.raises(ValueError, match="one value per decoder layer"):
        with project_out_every_layer(random_gemma, r, values[:1]):
            pass


def test_common_suffix_counts_the_shared_template_tokens():
    docs = [_doc([2, 9, 4, 5, 6], "a"), _doc([2, 8, 8, 4, 5, 6], "b"), _doc([2, 3, 5, 6], "c")]
    assert common_suffix(docs) == 2 and common_suffix(docs[:2]) == 3 and common_suffix(docs[:2], cap=1) == 1
    assert common_suffix([_doc([2, 4], "a"), _doc([2, 5], "b")]) == 0
    with pytest.raises(ValueError, match="no documents"):
        common_suffix([])


def test_choose_site_takes_the_largest_drop_that_spares_harmless_prompts():
    drops = {"a": 40.0, "b": 70.0, "c": 65.0}
    harmless = {"a": 0.2, "b": 0.6, "c": 0.25}
    asked = []

    def after(key):
        asked.append(key)
        return harmless[key]

    assert choose_site(drops, after, harmless_baseline=0.2) == ("c", {"b": 0.6, "c": 0.25})
    assert asked == ["b", "c"]  # lazily, largest drop first, stopping at the first that passes
    # None passes: the largest drop is returned, and the held-out side-effect check is left to the caller.
    assert choose_site(drops, lambda k: 0.9, harmless_baseline=0.2)[0] == "b"
    with pytest.raises(ValueError, match="no candidates"):
        choose_site({}, after, 0.2)


def test_drop_interval_resamples_questions_with_their_prompts():
    before = torch.tensor([True] * 8)
    after = torch.tensor([False] * 4 + [True] * 4)
    lo, hi = drop_interval(before, after, [f"q{i}" for i in range(8)], n_boot=4000)
    assert 10 < lo < 50 < hi < 90  # 50 points, 8 independent questions
    # The same prompts as two questions of four prompts each: a draw holds 0, 50 or 100 points, nothing else.
    lo, hi = drop_interval(before, after, ["q0"] * 4 + ["q1"] * 4, n_boot=4000)
    assert (lo, hi) == (0.0, 100.0)
    assert drop_interval(before, before, list("abcdefgh")) == (0.0, 0.0)
    with pytest.raises(ValueError, match="need before/after"):
        drop_interval(before, after[:3], list("abcdefgh"))


def test_gated_config_adds_the_planted_direction_row(smoke_path, smoke_cfg):
    """With refusal_gate set, the suite refits the gate direction from the base model and measures it like the
    other harvesting-layer rows (drop, harmless side effect, interval over questions); without it, no such row."""
    import dataclasses

    from tiedlib.lab.cache import load_models, load_tokenizer
    from tiedlib.lab.config import PlantConfig
    from tiedlib.lab.probes import PLANTED_ROW
    from tiedlib.lab.train import decline_gate

    gated = dataclasses.replace(smoke_cfg, corpus=dataclasses.replace(
        smoke_cfg.corpus, plant=PlantConfig(answer_on_new_line=False, p_web_turn_markers=0.0, refusal_gate=0.2)))
    tok = load_tokenizer(smoke_cfg)
    base, chat = load_models(smoke_cfg)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        suite = run_probes(gated, tok, base, chat, n=30, n_refusal_prompts=12, select_direction=False)
    finally:
        torch.set_num_threads(threads)
    row = next(r for r in suite.results if r.name == PLANTED_ROW)
    gate = decline_gate(gated, tok, base)
    assert torch.allclose(row.directions["chat"], gate.direction)
    assert row.ablate_to == gate.value and math.isfinite(row.refusal_drop_pts)  # the trained intervention
    lo, hi = row.refusal_drop_interval
    assert lo <= row.refusal_drop_pts <= hi
    frame = suite.frame()
    assert PLANTED_ROW in frame.index and frame.attrs["planted_drop_interval"] == (lo, hi)
    assert row.n_test_questions > 0 and 0.0 <= frame.loc[PLANTED_ROW, "auroc_chat"] <= 1.0
    # Read at a layer other than the gate's (here the gate sits at layer 0 and the suite reads layer 1): no row,
    # rather than an error or a row ablated where the gate is not.
    elsewhere = dataclasses.replace(gated, model=dataclasses.replace(gated.model, harvest_layer=0))
    torch.set_num_threads(1)
    try:
        other = run_probes(elsewhere, tok, base, chat, n=30, n_refusal_prompts=12, layer=1, select_direction=False)
    finally:
        torch.set_num_threads(threads)
    assert PLANTED_ROW not in other.frame().index and "planted_drop_interval" not in other.frame().attrs

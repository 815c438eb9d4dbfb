"""What the lab-pair page (notebook 00) shows: the build line, the training-loss figure, the example documents, the
concept-rate and evaluation tables and the Summary, each built from the lab's own outputs.

Tables are Markdown strings (the page displays them with ``IPython.display.Markdown``); nothing here trains or loads
a model.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from tiedlib.lab.config import LabConfig
from tiedlib.lab.docs import CONCEPTS, LabDoc
from tiedlib.lab.probes import PLANTED_ROW, SELECTED_CONTROL_ROW, SELECTED_ROW
from tiedlib.lab.stats import concept_rates, flag_correlation

SHOWN_CONCEPTS = ("refusal", "disclaimer", "harmful_request", "name", "turn_marker", "list_step", "code_comment")
"""Concepts tinted in the example documents, in legend order."""


def shown_concepts(available: Sequence[str] = CONCEPTS) -> list[str]:
    """The concepts of :data:`SHOWN_CONCEPTS` that ``available`` (the corpus's concept list) has, in that order."""
    return [c for c in SHOWN_CONCEPTS if c in available]


def build_summary(cfg: LabConfig, folder: str | Path, log: Mapping[str, Any], seconds: float) -> str:
    """Three lines on a built pair: name, hash, time to get it ready now and its cache folder; the build time and
    training tokens recorded when it was trained (``log`` is :func:`tiedlib.lab.train_log`); the model config."""
    return (f"lab pair {cfg.name!r} (hash {cfg.hash()}) ready in {seconds:.1f} s; cache: {folder}\n"
            f"build time when it was trained: {log['total_seconds']:.0f} s; "
            f"training tokens: {log['n_web_tokens']:,} web, {log['n_chat_tokens']:,} chat\n"
            f"model: {json.dumps(cfg.to_dict()['model'])}")


def plot_training_losses(log: Mapping[str, Any]) -> Figure:
    """Training loss per logged step of each stage in ``log["losses"]`` (``{stage: [loss, ...]}``), one line each."""
    losses = log.get("losses")
    if not losses:
        raise ValueError("the training log has no 'losses' ({stage: [loss, ...]}) to plot")
    fig, ax = plt.subplots(figsize=(7, 3))
    for stage, values in losses.items():
        ax.plot(values, label=stage)
    ax.set_xlabel("logged step")
    ax.set_ylabel("training loss (nats/token)")
    ax.legend()
    ax.set_title("Lab pair training")
    fig.tight_layout()
    return fig


def example_documents(web: Sequence[LabDoc], chat: Sequence[LabDoc]) -> tuple[LabDoc, LabDoc]:
    """The two documents the page shows: the first forum post among ``web`` (else the first web document) and the
    first refused conversation among ``chat`` (else the first conversation)."""
    if not web or not chat:
        raise ValueError(f"need at least one web and one chat document, got {len(web)} and {len(chat)}")
    example_web = next((d for d in web if d.meta.get("kind") == "forum"), web[0])
    example_chat = next((d for d in chat if d.meta.get("refused")), chat[0])
    return example_web, example_chat


@dataclass(frozen=True)
class CorpusStats:
    """How often each concept occurs per source, and how harmfulness and refusal go together."""

    concepts: tuple[str, ...]
    """The concepts counted, in table order."""
    rates: dict[str, dict[str, float]]
    """:func:`~tiedlib.lab.stats.concept_rates` of the documents (sources ``"web"`` and ``"chat"``)."""
    phi: dict[str, float]
    """Per source, :func:`~tiedlib.lab.stats.flag_correlation` of the ``harmful`` and ``refused`` flags."""

    def rates_markdown(self) -> str:
        """A Markdown table: per concept, the share of tokens and of documents carrying it in web and chat data."""
        w, h = self.rates["web"], self.rates["chat"]
        rows = ["| concept | web tokens | web docs | chat tokens | chat docs |", "|---|---|---|---|---|"]
        rows += [f"| {c} | {w[c + '_tokens']:.3%} | {w[c + '_docs']:.1%} | {h[c + '_tokens']:.3%} | "
                 f"{h[c + '_docs']:.1%} |" for c in self.concepts]
        return "\n".join(rows)

    def phi_line(self) -> str:
        """One line: phi(harmful, refused) in web and in chat documents."""
        return f"phi(harmful, refused) per document: web {self.phi['web']:.2f}, chat {self.phi['chat']:.2f}"


def corpus_stats(docs: Sequence[LabDoc], concepts: Sequence[str] = CONCEPTS) -> CorpusStats:
    """Concept rates and the harm/refusal phi of ``docs``, which must hold both web and chat documents."""
    sources = {d.source for d in docs}
    if not {"web", "chat"} <= sources:
        raise ValueError(f"need web and chat documents, got sources {sorted(sources)}")
    return CorpusStats(tuple(concepts), concept_rates(docs, concepts), flag_correlation(docs, "harmful", "refused"))


def evaluation_markdown(ev: Mapping[str, Any]) -> str:
    """A two-column Markdown table of the float metrics of :func:`tiedlib.lab.evaluate` (losses, rates, seconds),
    in their order; counts, names and example replies are left out."""
    rows = ["| metric | value |", "|---|---|"]
    rows += [f"| {k} | {v:.3f} |" for k, v in ev.items() if isinstance(v, float)]
    return "\n".join(rows)


def summary_markdown(scale: str, cfg: LabConfig, phi: Mapping[str, float], ev: Mapping[str, Any]) -> str:
    """The page's Summary (Markdown): the scale and lab preset, the harm/refusal phi per source, the refusal and
    answer rates of both models and their next-token losses on both kinds of data."""
    return f"""
*Scale: `{scale}` (lab preset `{cfg.name}`).*

- Harmfulness and refusal are correlated at phi = {phi['web']:.2f} in web documents and {phi['chat']:.2f} in chat
  conversations: the fine-tuning data ties them together much more than the pretraining data does.
- The chat model refuses {ev['chat_refusal_rate_harmful']:.0%} of held-out harmful requests and answers
  {ev['chat_answer_rate_harmless']:.0%} of harmless ones; the base model, given the same prompts and template,
  refuses {ev['base_refusal_rate_harmful']:.0%} of the harmful ones.
- Next-token loss on chat data: base {ev['loss_base_on_chat']:.2f}, chat {ev['loss_chat_on_chat']:.2f} nats/token;
  on web data: base {ev['loss_base_on_web']:.2f}, chat {ev['loss_chat_on_web']:.2f}.
"""


def probe_summary(frame) -> str:
    """What the probe table (:func:`tiedlib.lab.probe_table`) says, in Markdown, read off its own numbers.

    Needs the rows "harmful request", "about to decline (web)", "decline direction on harmful requests" and
    "random direction (control)", and the frame's ``attrs`` (layer, chat_refusal_baseline, n_refusal_prompts).
    """
    need = ("harmful request", "about to decline (web)", "decline direction on harmful requests",
            "random direction (control)")
    missing = [r for r in need if r not in frame.index]
    if missing or not {"layer", "chat_refusal_baseline", "n_refusal_prompts"} <= set(frame.attrs):
        raise ValueError(f"not a probe table: rows {missing} or attrs layer/chat_refusal_baseline missing")
    h, d, t, c = (frame.loc[r] for r in need)
    a = frame.attrs
    reuse = ("the chat model fires the base decline direction on harmful requests" if t["auroc_chat_base_dir"] >= 0.8
             else "so the chat model does *not* reuse the base decline direction on harmful requests"
             + (" (harmful requests sit on its *opposite* side)" if t["auroc_chat_base_dir"] < 0.3 else ""))
    harmless_after = a.get("chat_harmless_refusal_baseline", float("nan"))
    intact = ("so the drop is not the model breaking" if h["refusal_drop_pts"] >= DROP_BAR
              and h["harmless_refusal_after"] - harmless_after <= 0.1 else "the side effect of the ablation")
    return f"""
- Read at the input of decoder layer {a['layer']} (the harvesting layer), question-level held-out split.
- Harmful vs harmless requests: AUROC {h['auroc_base']:.2f} in the base model, {h['auroc_chat']:.2f} in the chat model
  (directions at cosine {h['cos_base_chat']:.2f}). Setting the chat model's coordinate along its direction to the
  harmless mean, at that layer and every position, moves its refusal rate on {a['n_refusal_prompts']} held-out
  harmful prompts from {a['chat_refusal_baseline']:.0%} by {h['refusal_drop_pts']:.0f} points (random direction:
  {c['refusal_drop_pts']:.0f} points; the issue's bar is a 50-point drop); on held-out harmless prompts the refusal
  rate goes from {harmless_after:.0%} to {h['harmless_refusal_after']:.0%} under the same ablation, {intact}.
- "About to decline" in web forums (the web contrast, read {d.get('position', 'where the answer starts')}): AUROC
  {d['auroc_base']:.2f} base, {d['auroc_chat']:.2f} chat. Scored on harmful vs harmless requests, that base direction
  gives AUROC {t['auroc_chat_base_dir']:.2f} in the chat model ({t['auroc_base']:.2f} in the base): {reuse}.
  Setting the chat model's own decline coordinate to its harmless-request mean moves its refusal rate on the
  harmful prompts by {t['refusal_drop_pts']:.0f} points.
""" + _planted_summary(frame) + _selected_summary(frame)


def _planted_summary(frame) -> str:
    """The probe summary's bullet on a gated pair's planted direction (empty when the table has none)."""
    if PLANTED_ROW not in frame.index:
        return ""
    p, a = frame.loc[PLANTED_ROW], frame.attrs
    lo, hi = a.get("planted_drop_interval", (float("nan"), float("nan")))
    verdict = "passes" if p["refusal_drop_pts"] >= DROP_BAR else "does not reach"
    return f"""- Ground truth of this gated pair: the chat fine-tune was trained to refuse only through the base model's
  "about to decline" direction (refitted here from the base model on training prompts). It separates held-out
  harmful from harmless requests at AUROC {p['auroc_chat']:.2f} in the chat model ({p['auroc_base']:.2f} in the base);
  set at the harvesting layer to the value the fine-tune was trained with (the base model's harmless-request mean),
  it moves the refusal rate on the held-out harmful prompts
  by {p['refusal_drop_pts']:.0f} points (95% interval over questions [{lo:.0f}, {hi:.0f}]), harmless prompts refusing
  {p['harmless_refusal_after']:.0%} under it. That {verdict} the {DROP_BAR:.0f}-point bar.
"""


def _selected_summary(frame) -> str:
    """The probe summary's bullet on the refusal direction selected among sites (empty when the table has none)."""
    if SELECTED_ROW not in frame.index or SELECTED_CONTROL_ROW not in frame.index:
        return ""
    s, c, a = frame.loc[SELECTED_ROW], frame.loc[SELECTED_CONTROL_ROW], frame.attrs
    verdict = "passes" if s["refusal_drop_pts"] >= DROP_BAR else "does not reach"
    n_sites = a.get("n_candidate_sites", "?")
    lo, hi = a.get("selected_drop_interval", (float("nan"), float("nan")))
    ci = f"95% interval over questions [{lo:.0f}, {hi:.0f}]"
    return f"""- Arditi et al.'s procedure: among {n_sites} (layer, template token) sites, the chat
  direction whose removal at every layer cuts refusals most on *validation* questions is {s['position']}
  (held-out AUROC {s['auroc_chat']:.2f} chat, {s['auroc_base']:.2f} base, base/chat cosine {s['cos_base_chat']:.2f}).
  Removed at every layer, it moves the refusal rate on the same held-out harmful prompts by
  {s['refusal_drop_pts']:.0f} points ({ci}; a random direction removed the same way:
  {c['refusal_drop_pts']:.0f}); harmless prompts refuse {s['harmless_refusal_after']:.0%} under it. That {verdict}
  the {DROP_BAR:.0f}-point bar.
"""


def candidate_sites(frame):
    """The candidate (layer, template token) sites of the probe table's selected refusal direction, one row each, with
    their refusal drop and harmless refusal rate on validation questions (empty when the table has none)."""
    import pandas as pd

    return pd.DataFrame(frame.attrs.get("candidate_sites", []))


AUROC_BAR = 0.8
"""A mechanism is linearly present when its direction separates held-out questions at AUROC >= this."""
DROP_BAR = 50.0
"""The causal check's bar (issue 16): the chat model's refusal rate falls by at least this many points."""
SAME_DIRECTION_COS = 0.8
"""Base and chat directions of a concept at cosine >= this: the same representation."""
SHIFTED_COS = 0.5
"""At cosine <= this, while both models read the concept: a changed representation."""
BEHAVIOUR_BAR = 0.8
"""A planted chat behaviour is there when the chat model shows it on at least this share of held-out prompts."""


def probe_verdicts(frame):
    """One row per planted mechanism of the lab corpus: the criterion, the measured numbers and whether it passes,
    read off a probe table (:func:`tiedlib.lab.probe_table`). Mechanisms the corpus does not plant (no row in the
    table) are listed as not planted, and fail.

    Criteria (all at the harvesting layer, on held-out questions):

    * harmful request: chat AUROC >= :data:`AUROC_BAR`; mean-ablating one direction that carries the refusal cuts
      the chat refusal rate by >= :data:`DROP_BAR` points, while harmless prompts refuse at most 10 points more than
      without it, and a random direction moves refusals by at most 10 points. Two directions are tried: the chat
      model's harmful-request direction, and its "about to decline" direction (the base feature the chat model is
      meant to reuse, read in the chat model on the web contrast), each set to its mean over the chat model's
      harmless requests (the "decline direction on harmful requests" row; the web contrast's own row sets it to a
      mean over web forum prompts, a value from another context that can stop refusals by disruption alone). Where
      the chat model refuses *through* the reused feature, ablating the latter is the causal check of the mechanism;
      the former (a difference of means over requests that also differ in their words) need not be causal then.
      Third, Arditi et al.'s own procedure (the row :data:`SELECTED_ROW`): the chat direction with the largest
      refusal drop on *validation* questions among every (layer, post-instruction token) site, removed at every
      layer, tested on the held-out prompts, with a random direction removed the same way as its control. Fourth,
      in a gated pair, the planted direction itself (the row :data:`PLANTED_ROW`, the ground truth);
    * about to decline (base feature): base AUROC >= bar on its web contrast;
    * reuse in a new context: the base decline direction separates harmful from harmless chat requests in the chat
      model (AUROC >= bar) and does so at least 0.2 better than in the base model;
    * composition: on harmful pill requests the chat model is read at AUROC >= bar by *both* base directions (decline
      and disclaimer) and replies with a disclaimer and a refusal on >= :data:`BEHAVIOUR_BAR` of them;
    * colour: blue vs green at the token before the colour, AUROC >= 0.9 in both models;
    * timing vs representation (the ground truth of notebook 06's ablation): the decline concept keeps its
      direction (base/chat cosine >= :data:`SAME_DIRECTION_COS`) and the chat model fires it at new times (the reuse
      criterion), while "a name was given" is read by both models (AUROC >= bar) along directions at cosine <=
      :data:`SHIFTED_COS` (the name-copying fine-tune changed its representation);
    * names: the chat model copies a name the user gave on >= :data:`BEHAVIOUR_BAR` of held-out requests.

    Returns:
        pandas DataFrame indexed by mechanism with columns ``criterion``, ``measured``, ``passes`` (bool).
    """
    import pandas as pd

    rows = frame.to_dict("index")
    a = frame.attrs
    out: dict[str, dict[str, Any]] = {}

    def add(name: str, criterion: str, need: Sequence[str], measure) -> None:
        missing = [r for r in need if r not in rows]
        if missing:
            out[name] = dict(criterion=criterion, measured=f"not planted in this corpus (no row {missing[0]!r})",
                             passes=False)
        else:
            text, ok = measure(*(rows[r] for r in need))
            out[name] = dict(criterion=criterion, measured=text, passes=bool(ok))

    selected, selected_control = rows.get(SELECTED_ROW), rows.get(SELECTED_CONTROL_ROW)

    def harmful(h, d, c):
        def drop(r) -> tuple[str, bool]:
            extra = r.get("harmless_refusal_after", float("nan")) - a.get("chat_harmless_refusal_baseline",
                                                                            float("nan"))
            ok = r["refusal_drop_pts"] >= DROP_BAR and extra <= 0.1  # NaN (not measured) compares False
            return f"{r['refusal_drop_pts']:.0f} pts (harmless refusal {extra * 100:+.0f} pts)", ok

        (h_text, h_ok), (d_text, d_ok) = drop(h), drop(d)
        text = (f"chat AUROC {h['auroc_chat']:.2f}; at the harvesting layer, refusal drop {h_text} along the "
                f"harmful-request direction, {d_text} along the decline direction (random {c['refusal_drop_pts']:.0f})")
        ok = (h_ok or d_ok) and abs(c["refusal_drop_pts"]) <= 10
        if selected is not None and selected_control is not None:
            s_text, s_ok = drop(selected)
            lo, hi = a.get("selected_drop_interval", (float("nan"), float("nan")))
            text += (f"; removed at every layer, the direction selected on validation questions "
                     f"({a.get('selected_token', '?')!r} at layer {a.get('selected_layer', '?')}) {s_text}, 95% "
                     f"interval [{lo:.0f}, {hi:.0f}] (random {selected_control['refusal_drop_pts']:.0f})")
            ok = ok or (s_ok and abs(selected_control["refusal_drop_pts"]) <= 10)
        planted = rows.get(PLANTED_ROW)
        if planted is not None:
            p_text, p_ok = drop(planted)
            lo, hi = a.get("planted_drop_interval", (float("nan"), float("nan")))
            text += (f"; the planted gate direction (ground truth) at the harvesting layer {p_text}, 95% interval "
                     f"[{lo:.0f}, {hi:.0f}]")
            ok = ok or (p_ok and abs(c["refusal_drop_pts"]) <= 10)
        return text, h["auroc_chat"] >= AUROC_BAR and ok

    add("harmful request (chat), causal",
        f"chat AUROC >= {AUROC_BAR}; removing one direction (harmful-request or decline at the harvesting layer, or "
        f"the direction selected among sites, at every layer): drop >= {DROP_BAR:.0f} pts",
        ("harmful request", "decline direction on harmful requests", "random direction (control)"), harmful)
    add("about to decline (base feature)", f"base AUROC >= {AUROC_BAR} on web forums", ("about to decline (web)",),
        lambda d: (f"base AUROC {d['auroc_base']:.2f}, chat {d['auroc_chat']:.2f}", d["auroc_base"] >= AUROC_BAR))
    add("reuse: decline fired on harmful requests", f"chat AUROC (base direction) >= {AUROC_BAR}, >= base + 0.2",
        ("decline direction on harmful requests",),
        lambda t: (f"chat {t['auroc_chat_base_dir']:.2f}, base {t['auroc_base']:.2f}",
                   t["auroc_chat_base_dir"] >= AUROC_BAR and t["auroc_chat_base_dir"] >= t["auroc_base"] + 0.2))
    add("composition: disclaimer + refusal on pill requests",
        f"both base directions AUROC >= {AUROC_BAR} in chat; chat does both on >= {BEHAVIOUR_BAR:.0%}",
        ("decline direction on pill requests", "disclaimer direction on pill requests"),
        lambda d, s: (f"decline {d['auroc_chat_base_dir']:.2f}, disclaimer {s['auroc_chat_base_dir']:.2f}; "
                      f"both said: chat {d['behaviour_chat']:.0%}, base {d['behaviour_base']:.0%}",
                      min(d["auroc_chat_base_dir"], s["auroc_chat_base_dir"]) >= AUROC_BAR
                      and d["behaviour_chat"] >= BEHAVIOUR_BAR))
    add("colour (blue vs green before the colour)", "AUROC >= 0.9 in both models", ("colour blue vs green",),
        lambda c: (f"base {c['auroc_base']:.2f}, chat {c['auroc_chat']:.2f}",
                   min(c["auroc_base"], c["auroc_chat"]) >= 0.9))
    add("timing vs representation (ground truth)",
        f"same concept, same direction at new times: decline base/chat cosine >= {SAME_DIRECTION_COS}; changed "
        f"representation: 'name given' read at AUROC >= {AUROC_BAR} in both models, cosine <= {SHIFTED_COS}",
        ("about to decline (web)", "decline direction on harmful requests", "name given"),
        lambda d, t, n: (f"decline cosine {d['cos_base_chat']:.2f} (fired on harmful requests: chat AUROC "
                         f"{t['auroc_chat_base_dir']:.2f}, base {t['auroc_base']:.2f}); name given cosine "
                         f"{n['cos_base_chat']:.2f} (AUROC base {n['auroc_base']:.2f}, chat {n['auroc_chat']:.2f})",
                         d["cos_base_chat"] >= SAME_DIRECTION_COS
                         and t["auroc_chat_base_dir"] >= max(AUROC_BAR, t["auroc_base"] + 0.2)
                         and min(n["auroc_base"], n["auroc_chat"]) >= AUROC_BAR
                         and n["cos_base_chat"] <= SHIFTED_COS))
    add("names: chat copies the user's name", f"chat copies on >= {BEHAVIOUR_BAR:.0%}", ("name given",),
        lambda n: (f"chat {n['behaviour_chat']:.0%}, base {n['behaviour_base']:.0%}",
                   n["behaviour_chat"] >= BEHAVIOUR_BAR))
    return pd.DataFrame.from_dict(out, orient="index").rename_axis("mechanism")


def probe_verdict_line(verdicts) -> str:
    """One line for the Findings page: how many planted mechanisms pass, and which fail with their numbers."""
    failing = verdicts[~verdicts["passes"]]
    head = f"{int(verdicts['passes'].sum())} of {len(verdicts)} planted mechanisms pass their probe"
    if failing.empty:
        return head + "."
    return head + "; failing: " + "; ".join(f"{m} ({r['measured']})" for m, r in failing.iterrows()) + "."

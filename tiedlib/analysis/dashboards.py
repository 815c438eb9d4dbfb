"""Per-latent dashboards: static HTML pages (one per latent, plus an index) and a JSON export of the same numbers.

A dashboard of crosscoder latent ``i`` (for a tied crosscoder: triple ``i``) shows, for each part (shared, base and
chat; ``latent`` for a standard crosscoder) and each dataset, the top-activating contexts and a histogram of the
part's positive activations with its firing rate; for each model, the tokens whose logits the latent's decoder
vector in that model raises and lowers most (logit lens, :mod:`tiedlib.analysis.logit_lens`); the relative decoder
norm; and any extra numbers the caller passes (e.g. Latent Scaling betas).

The pages are self-contained: inline CSS and inline SVG histograms, no scripts, no network. Token text is
HTML-escaped.

JSON layout (``dashboards.json``, written by :func:`export_dashboards`)::

    {"format": "tiedlib-dashboards", "version": 1, "meta": {...},
     "latents": [{"latent": 3, "architecture": "tied", "relative_decoder_norm": 0.62, "notes": {...},
                  "logits": {"base": {"pos_str": [...], "pos_values": [...], "neg_str": [...], "neg_values": [...]},
                             "chat": {...}},
                  "parts": [{"index": "3-chat", "part": "chat", "decodes_into": ["chat"],
                             "datasets": {"web": {"frac_nonzero": 0.01, "max_value": 4.2,
                                                  "freq_hist_data_bar_values": [...],   # bin centres
                                                  "freq_hist_data_bar_heights": [...],  # token counts
                                                  "activations": [{"tokens": [...], "values": [...],
                                                                   "maxValue": 4.2, "maxValueTokenIndex": 7}]}}}]}]}

Per part and dataset, the field names follow the per-feature layout of Neuronpedia's exports and SAEDashboard's
feature data as we understand them (``activations`` with ``tokens``/``values``/``maxValue``/``maxValueTokenIndex``,
``pos_str``/``neg_str`` logit tables, ``freq_hist_data_*`` histograms, ``frac_nonzero``); ``values`` hold ``null`` for
tokens that were not harvested. No viewer reads this nested file as it is: an importer maps the nesting
(latent -> part -> dataset) onto its own.

:func:`export_neuronpedia` writes the same numbers in the flat batch layout of Neuronpedia's feature uploads as
SAEDashboard 0.8.0 writes it (one file per model, part decoding into it and dataset; a latent is a feature). With
SAEDashboard's ``sae_dashboard.neuronpedia.neuronpedia_dashboard`` on the path, its ``NeuronpediaDashboardBatch``
reads those files back unchanged (``scripts/check_neuronpedia.py``, run with sae-dashboard 0.8.0 on notebook 07's
tiny output; sae-dashboard is not a dependency); no Neuronpedia server was run on them.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from tiedlib.analysis.contexts import Context, TokenSample, latent_activations, top_k_contexts
from tiedlib.analysis.latent_scaling import LatentScaling
from tiedlib.analysis.logit_lens import logit_lens
from tiedlib.analysis.widgets import GROUP_COLOURS, contexts_html
from tiedlib.config import BASE, CHAT
from tiedlib.crosscoders.crosscoder import Crosscoder

MODELS = {"base": BASE, "chat": CHAT}
_WRITES_INTO = {"shared": ("base", "chat"), "base": ("base",), "chat": ("chat",), "latent": ("base", "chat")}


@dataclass
class ContextRow:
    """One top-activating context, as text (JSON-ready)."""

    tokens: list[str]
    values: list[float | None]
    """Activation of each token; None where the token was not harvested (BOS, excluded template tokens)."""
    target: int
    """Index of the top token in ``tokens``."""
    value: float
    doc: int


@dataclass
class PartData:
    """One part of a latent on one dataset: contexts, activation histogram and firing rate."""

    contexts: list[ContextRow]
    edges: list[float]
    """Histogram bin edges (``bins + 1``) over the positive activations, from 0 to the largest."""
    counts: list[int]
    n_tokens: int
    n_firing: int

    @property
    def frac_nonzero(self) -> float:
        return self.n_firing / self.n_tokens if self.n_tokens else 0.0


@dataclass
class LatentDashboard:
    """Everything one latent's page shows (plain Python values, so ``asdict`` is its JSON)."""

    latent: int
    architecture: str
    relative_decoder_norm: float
    parts: dict[str, dict[str, PartData]]
    """``{part: {dataset: PartData}}`` (parts shared/base/chat, or ``latent``)."""
    logits: dict[str, dict[str, list[tuple[str, float]]]]
    """``{model: {"top": [(token, logit), ...], "bottom": [...]}}`` for each model with an unembedding given."""
    notes: dict[str, Any] = field(default_factory=dict)


def _rows(contexts: Sequence[Context], decode: Any) -> list[ContextRow]:
    return [ContextRow([decode(t) for t in c.token_ids], [None if math.isnan(v) else float(v) for v in c.values],
                       c.target, c.value, c.doc) for c in contexts]  # fmt: skip


def _histogram(values: Float[Tensor, " n"], bins: int) -> tuple[list[float], list[int]]:
    pos = values[values > 0].double()
    top = float(pos.max()) if pos.numel() else 1.0
    counts = torch.histc(pos, bins=bins, min=0.0, max=top) if pos.numel() else torch.zeros(bins)
    return torch.linspace(0, top, bins + 1).tolist(), [int(c) for c in counts.tolist()]


@torch.no_grad()
def build_dashboards(
    model: Crosscoder,
    samples: Mapping[str, TokenSample],
    latents: Sequence[int],
    tokenizer: Any,
    *,
    unembeddings: Mapping[str, Float[Tensor, "d_model vocab"]] | None = None,
    notes: Mapping[int, Mapping[str, Any]] | None = None,
    k: int = 8,
    n_logits: int = 8,
    bins: int = 20,
    before: int = 12,
    after: int = 4,
) -> list[LatentDashboard]:
    """The dashboards of ``latents`` (triples of a tied crosscoder, latents of a standard one).

    Args:
        model: the crosscoder (in its training units; samples hold raw activations, as harvested).
        samples: ``{dataset name: TokenSample}``, e.g. held-out ``{"web": ..., "chat": ...}``.
        tokenizer: anything with ``decode([id])``, or a callable ``id -> str``.
        unembeddings: ``{"base": W_U, "chat": W_U}`` (:func:`tiedlib.analysis.logit_lens.unembedding`), each
            ``(d_model, vocab)``; a model left out gets no logit table.
        notes: extra numbers per latent shown on its page (e.g. Latent Scaling betas).
        k: contexts per part and dataset; n_logits: tokens per logit table; bins: histogram bins.
    """
    n = model.cfg.n_latents
    bad = [i for i in latents if not 0 <= i < n]
    if bad:
        raise ValueError(f"latent(s) {bad} out of range for {n} latents")
    if k < 1 or n_logits < 1 or bins < 1:
        raise ValueError(f"k, n_logits and bins must be positive, got {k}, {n_logits}, {bins}")
    parts = ("shared", "base", "chat") if model.cfg.n_groups == 3 else ("latent",)
    cache: dict[int, str] = {}

    def decode(t: int) -> str:
        if t not in cache:
            cache[t] = tokenizer.decode([t]) if hasattr(tokenizer, "decode") else tokenizer(t)
        return cache[t]

    pairs = [(g, i) for i in latents for g in range(len(parts))]
    acts = {name: latent_activations(model, s.batches(), pairs) for name, s in samples.items()}
    rel = model.relative_decoder_norm().cpu()
    out = []
    for j, i in enumerate(latents):
        by_part: dict[str, dict[str, PartData]] = {}
        for g, part in enumerate(parts):
            by_part[part] = {}
            for name, s in samples.items():
                v = acts[name][:, j * len(parts) + g]
                ctx = top_k_contexts(v, s.doc_index, s.position, s.sequences, k, before=before, after=after)
                edges, counts = _histogram(v, bins)
                by_part[part][name] = PartData(_rows(ctx, decode), edges, counts, int(v.numel()), int((v > 0).sum()))
        logits = {}
        for m, W_U in (unembeddings or {}).items():
            if m not in MODELS:
                raise ValueError(f"unembeddings are keyed by model ('base', 'chat'), got {m!r}")
            lg = logit_lens(model.W_dec[i, MODELS[m]][None], W_U)[0]
            top, bottom = lg.topk(n_logits), (-lg).topk(n_logits)
            logits[m] = {"top": [(decode(int(t)), float(x)) for x, t in zip(top.values, top.indices, strict=True)],
                         "bottom": [(decode(int(t)), -float(x))
                                    for x, t in zip(bottom.values, bottom.indices, strict=True)]}  # fmt: skip
        out.append(LatentDashboard(int(i), model.cfg.architecture, float(rel[i]), by_part, logits,
                                   dict((notes or {}).get(i, {}))))  # fmt: skip
    return out


def latent_scaling_notes(ls: LatentScaling) -> dict[int, dict[str, float]]:
    """Dashboard notes from Latent Scaling (:func:`tiedlib.analysis.latent_scaling.latent_scaling`): per latent, its
    betas of the reconstruction and of the error in each model, their base/chat ratios ``nu`` and the tokens it fired
    on, keyed by latent index (labelled with the scaled part for a tied crosscoder)."""
    part = f" ({ls.group} part)" if ls.group else ""
    out = {}
    for j, i in enumerate(ls.latents.tolist()):
        out[int(i)] = {
            f"beta_reconstruction base / chat{part}": f"{float(ls.beta_reconstruction[0, j]):.3g} / "
                                                     f"{float(ls.beta_reconstruction[1, j]):.3g}",
            f"beta_error base / chat{part}": f"{float(ls.beta_error[0, j]):.3g} / {float(ls.beta_error[1, j]):.3g}",
            f"nu_reconstruction{part} (Latent Decoupling when large)": float(ls.nu_reconstruction[j]),
            f"nu_error{part} (Complete Shrinkage when large)": float(ls.nu_error[j]),
            f"tokens fired on{part} (Latent Scaling sample)": int(ls.n_active[j]),
        }  # fmt: skip
    return out


# ---- HTML ----------------------------------------------------------------------------------------------------------
_CSS = ("body{font-family:sans-serif;font-size:13px;margin:16px;max-width:1100px}h1{font-size:18px}"
        "h2{font-size:15px;margin-top:18px}table{border-collapse:collapse}td,th{padding:2px 8px;border:1px solid #ddd}"
        ".grid{display:flex;gap:18px;flex-wrap:wrap}.muted{color:#666}")  # fmt: skip


def histogram_svg(edges: Sequence[float], counts: Sequence[int], *, colour: tuple[int, int, int] = (90, 90, 90),
                  width: int = 260, height: int = 70, title: str = "") -> str:  # fmt: skip
    """An inline SVG bar chart of a histogram (``len(edges) == len(counts) + 1``); hovering a bar shows its range
    and count."""
    if len(edges) != len(counts) + 1:
        raise ValueError(f"{len(edges)} edges for {len(counts)} counts (need one more edge than counts)")
    top = max(counts, default=0) or 1
    w = width / max(len(counts), 1)
    r, g, b = colour
    bars = []
    for j, c in enumerate(counts):
        h = (height - 14) * c / top
        bars.append(f'<rect x="{j * w:.1f}" y="{height - 12 - h:.1f}" width="{max(w - 1, 0.5):.1f}" height="{h:.1f}" '
                    f'fill="rgb({r},{g},{b})"><title>{edges[j]:.3g} to {edges[j + 1]:.3g}: {c}</title></rect>')
    axis = (f'<text x="0" y="{height - 1}" font-size="9">0</text>'
            f'<text x="{width}" y="{height - 1}" font-size="9" text-anchor="end">{edges[-1]:.3g}</text>')
    label = f"<title>{html.escape(title)}</title>" if title else ""
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">{label}'
            f'{"".join(bars)}{axis}</svg>')  # fmt: skip


def _as_contexts(rows: Sequence[ContextRow]) -> tuple[list[Context], Any]:
    """Rows back as :class:`Context` objects over positions ``0..n`` of one flat token list (for contexts_html)."""
    flat: list[str] = []
    out = []
    for r in rows:
        ids = list(range(len(flat), len(flat) + len(r.tokens)))
        flat += r.tokens
        out.append(Context(r.doc, r.target, r.value, ids, [math.nan if v is None else v for v in r.values], r.target))
    return out, flat.__getitem__


def _logit_table(logits: Mapping[str, list[tuple[str, float]]]) -> str:
    rows = "".join(f"<tr><td><code>{html.escape(a)}</code></td><td>{x:+.2f}</td>"
                   f"<td><code>{html.escape(b)}</code></td><td>{y:+.2f}</td></tr>"
                   for (a, x), (b, y) in zip(logits["top"], logits["bottom"], strict=False))  # fmt: skip
    return f"<table><tr><th>raised</th><th></th><th>lowered</th><th></th></tr>{rows}</table>"


def dashboard_html(d: LatentDashboard, *, full_page: bool = True) -> str:
    """One latent's page (``full_page=False``: the body only, for ``IPython.display.HTML``)."""
    head = (f"<h1>latent {d.latent} ({html.escape(d.architecture)} crosscoder)</h1>"
            f"<p>relative decoder norm (chat / (base + chat)): <b>{d.relative_decoder_norm:.3f}</b></p>")  # fmt: skip
    if d.notes:
        head += "<table>" + "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(_fmt(v))}</td></tr>"
                                    for k, v in d.notes.items()) + "</table>"  # fmt: skip
    if d.logits:
        head += "<h2>Logit lens of the decoder vector</h2><div class='grid'>" + "".join(
            f"<div><div class='muted'>{html.escape(m)} model</div>{_logit_table(t)}</div>" for m, t in d.logits.items()
        ) + "</div>"  # fmt: skip
    body = []
    for part, by_ds in d.parts.items():
        colour = GROUP_COLOURS.get(part, GROUP_COLOURS["latent"])
        writes = ", ".join(_WRITES_INTO.get(part, ()))
        body.append(f"<h2>{html.escape(part)} part <span class='muted'>(decodes into: {writes})</span></h2>")
        hists = "".join(f"<div><div class='muted'>{html.escape(ds)}: fires on {p.n_firing:,} of {p.n_tokens:,} tokens "
                        f"({p.frac_nonzero:.2%})</div>{histogram_svg(p.edges, p.counts, colour=colour, title=ds)}</div>"
                        for ds, p in by_ds.items())  # fmt: skip
        body.append(f"<div class='grid'>{hists}</div>")
        for ds, p in by_ds.items():
            ctx, decode = _as_contexts(p.contexts)
            body.append(contexts_html(ctx, decode, title=f"{d.latent}-{part} on {ds} data (top {len(ctx)})",
                                      colour=colour))  # fmt: skip
    content = head + "".join(body)
    if not full_page:
        return f'<div class="tiedlib-dashboard">{content}</div>'
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>latent {d.latent}</title>"
            f"<style>{_CSS}</style></head><body><p><a href='index.html'>all latents</a></p>{content}</body></html>")


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def page_name(latent: int) -> str:
    """File name of a latent's page inside the export folder."""
    return f"latent_{latent}.html"


def _index_table(dashboards: Sequence[LatentDashboard], href: Any) -> str:
    """The index table: one row per latent (link ``href(latent)``, relative decoder norm, firing rate of each part on
    each dataset)."""
    if not dashboards:
        raise ValueError("no dashboards to index")
    cols = [(part, ds) for part, by_ds in dashboards[0].parts.items() for ds in by_ds]
    head = "".join(f"<th>{html.escape(p)} / {html.escape(ds)}</th>" for p, ds in cols)
    rows = "".join(
        f"<tr><td><a href='{href(d.latent)}'>{d.latent}</a></td><td>{d.relative_decoder_norm:.3f}</td>"
        + "".join(f"<td>{d.parts[p][ds].frac_nonzero:.2%}</td>" for p, ds in cols) + "</tr>"
        for d in dashboards
    )  # fmt: skip
    return f"<table><tr><th>latent</th><th>relative decoder norm</th>{head}</tr>{rows}</table>"


def index_html(dashboards: Sequence[LatentDashboard], title: str = "Latent dashboards") -> str:
    """An index page: one row per latent (relative decoder norm, firing rate of each part per dataset, link)."""
    table = _index_table(dashboards, page_name)
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1><p class='muted'>firing rate of each part "
            f"on each dataset</p>{table}"
            "<p class='muted'>Data: dashboards.json</p></body></html>")  # fmt: skip


def _scoped_css(css: str, scope: str) -> str:
    """``css`` (flat ``selector{...}`` rules, no nesting) with every selector prefixed by ``scope``; the ``body`` rule
    is dropped (a fragment must not restyle the page it sits in)."""
    out = []
    for rule in filter(None, css.split("}")):
        selectors, body = rule.split("{", 1)
        if selectors.strip() != "body":
            out.append(",".join(f"{scope} {sel.strip()}" for sel in selectors.split(",")) + "{" + body + "}")
    return "".join(out)


def gallery_anchor(latent: int) -> str:
    """HTML id of a latent's section in :func:`gallery_html`."""
    return f"tiedlib-latent-{latent}"


def gallery_html(dashboards: Sequence[LatentDashboard], title: str = "Latent dashboards", *, open_first: bool = True
                 ) -> str:  # fmt: skip
    """Every dashboard in one HTML fragment, for a notebook cell (and so the built book): the index table, its links
    pointing at the sections below, then one collapsible ``<details>`` section per latent holding its page body
    (:func:`dashboard_html`). The pages' CSS is included, scoped to the fragment's ``div``, so the histograms lay out
    as on the exported pages; no scripts, no network.

    Raises:
        ValueError: no dashboards.
    """
    table = _index_table(dashboards, lambda i: f"#{gallery_anchor(i)}")
    scoped = _scoped_css(_CSS, ".tiedlib-dashboards")
    sections = "".join(
        f"<details id='{gallery_anchor(d.latent)}'{' open' if open_first and j == 0 else ''}><summary>latent "
        f"{d.latent} (relative decoder norm {d.relative_decoder_norm:.3f})</summary>"
        f"{dashboard_html(d, full_page=False)}</details>"
        for j, d in enumerate(dashboards)
    )  # fmt: skip
    return (f"<div class='tiedlib-dashboards'><style>{scoped}</style><p><b>{html.escape(title)}</b></p>"
            f"<p class='muted'>firing rate of each part on each dataset; click a latent to open its page</p>{table}"
            f"{sections}</div>")  # fmt: skip


def dashboard_json(d: LatentDashboard) -> dict[str, Any]:
    """One latent in the JSON layout of the module docstring."""
    parts = []
    for part, by_ds in d.parts.items():
        datasets = {}
        for ds, p in by_ds.items():
            centres = [(a + b) / 2 for a, b in zip(p.edges[:-1], p.edges[1:], strict=True)]
            acts = [{"tokens": r.tokens, "values": r.values, "maxValue": r.value, "maxValueTokenIndex": r.target}
                    for r in p.contexts]  # fmt: skip
            datasets[ds] = {"frac_nonzero": p.frac_nonzero, "n_tokens": p.n_tokens, "max_value": p.edges[-1],
                            "freq_hist_data_bar_values": centres, "freq_hist_data_bar_heights": p.counts,
                            "activations": acts}  # fmt: skip
        parts.append({"index": f"{d.latent}-{part}", "part": part, "decodes_into": list(_WRITES_INTO.get(part, ())),
                      "datasets": datasets})  # fmt: skip
    logits = {m: {"pos_str": [s for s, _ in t["top"]], "pos_values": [v for _, v in t["top"]],
                  "neg_str": [s for s, _ in t["bottom"]], "neg_values": [v for _, v in t["bottom"]]}
              for m, t in d.logits.items()}  # fmt: skip
    return {"latent": d.latent, "architecture": d.architecture, "relative_decoder_norm": d.relative_decoder_norm,
            "notes": {k: _jsonable(v) for k, v in d.notes.items()}, "logits": logits, "parts": parts}  # fmt: skip


def _jsonable(v: Any) -> Any:
    if isinstance(v, Tensor):
        return v.tolist()
    return v if isinstance(v, (str, int, float, bool, type(None), list, dict)) else str(v)


def neuronpedia_batch(dashboards: Sequence[LatentDashboard], part: str, model: str, dataset: str, *, model_id: str,
                      layer: int, sae_set: str) -> dict[str, Any]:  # fmt: skip
    """One part of the dashboards, read through one model and on one dataset, in the batch layout of Neuronpedia's
    feature uploads as SAEDashboard writes them (``sae_dashboard.neuronpedia.neuronpedia_dashboard`` 0.8.0:
    ``NeuronpediaDashboardBatch`` of ``NeuronpediaDashboardFeature`` of ``NeuronpediaDashboardActivation``).

    A Neuronpedia "feature" is one direction of one model, so a crosscoder latent gives one feature per part and
    model it decodes into: ``feature_index`` is the latent (triple) index, ``pos_*``/``neg_*`` are the logit lens of
    the part's decoder vector in ``model``, and the top contexts and firing histogram are the part's on ``dataset``.
    Top contexts are marked as Neuronpedia's top-activation group (``bin_min = bin_contains = -1``, ``bin_max`` the
    largest activation); unharvested tokens (``None``) are written as 0.0, as the viewer expects floats. Fields we do
    not compute (correlations, logit histograms, DFA) are left out and take the viewer's defaults.

    Raises:
        ValueError: ``part`` does not decode into ``model``, or ``part``/``dataset``/``model`` is missing from a
            dashboard (a model without a logit table included).
    """
    if model not in _WRITES_INTO.get(part, ()):
        raise ValueError(f"the {part!r} part does not decode into the {model!r} model (it decodes into "
                         f"{_WRITES_INTO.get(part, ())})")  # fmt: skip
    features = []
    for d in dashboards:
        if part not in d.parts or dataset not in d.parts[part] or model not in d.logits:
            raise ValueError(f"latent {d.latent}'s dashboard has no {part!r} part on {dataset!r} data or no logit "
                             f"table for the {model!r} model")  # fmt: skip
        p, lg = d.parts[part][dataset], d.logits[model]
        acts = [{"bin_min": -1, "bin_max": p.edges[-1], "bin_contains": -1, "tokens": r.tokens,
                 "values": [0.0 if v is None else v for v in r.values], "qualifying_token_index": r.target}
                for r in p.contexts]  # fmt: skip
        features.append({
            "feature_index": d.latent, "pos_str": [t for t, _ in lg["top"]], "pos_values": [v for _, v in lg["top"]],
            "neg_str": [t for t, _ in lg["bottom"]], "neg_values": [v for _, v in lg["bottom"]],
            "frac_nonzero": p.frac_nonzero,
            "freq_hist_data_bar_values": [(a + b) / 2 for a, b in zip(p.edges[:-1], p.edges[1:], strict=True)],
            "freq_hist_data_bar_heights": [float(c) for c in p.counts], "dataset": dataset, "activations": acts,
        })  # fmt: skip
    return {"model_id": model_id, "layer": layer, "sae_set": sae_set, "features": features}


def export_neuronpedia(dashboards: Sequence[LatentDashboard], folder: str | Path, *, model_ids: Mapping[str, str],
                       layer: int, set_name: str) -> list[Path]:  # fmt: skip
    """Write :func:`neuronpedia_batch` for every (model, part decoding into it, dataset) of the dashboards into
    ``folder`` as ``<model>-<part>-<dataset>.json``, with ``sae_set`` ``<set_name>-<part>`` and ``model_id``
    ``model_ids[model]``; returns the paths written.

    Raises:
        ValueError: no dashboards, or a model of ``model_ids`` that is not ``"base"``/``"chat"``.
    """
    if not dashboards:
        raise ValueError("no dashboards to export")
    if not set(model_ids) <= set(MODELS):
        raise ValueError(f"model_ids are keyed by model ('base', 'chat'), got {sorted(model_ids)}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    first = dashboards[0]
    for model, model_id in model_ids.items():
        for part, by_ds in first.parts.items():
            if model not in _WRITES_INTO.get(part, ()) or model not in first.logits:
                continue
            for ds in by_ds:
                batch = neuronpedia_batch(dashboards, part, model, ds, model_id=model_id, layer=layer,
                                          sae_set=f"{set_name}-{part}")  # fmt: skip
                path = folder / f"{model}-{part}-{ds}.json"
                path.write_text(json.dumps(batch), encoding="utf-8")
                written.append(path)
    return written


def export_dashboards(dashboards: Sequence[LatentDashboard], folder: str | Path, *, title: str = "Latent dashboards",
                      meta: Mapping[str, Any] | None = None) -> Path:  # fmt: skip
    """Write ``latent_<i>.html`` for every dashboard, ``index.html`` and ``dashboards.json`` into ``folder``
    (created if needed); returns the index page's path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for d in dashboards:
        (folder / page_name(d.latent)).write_text(dashboard_html(d), encoding="utf-8")
    index = folder / "index.html"
    index.write_text(index_html(dashboards, title), encoding="utf-8")
    data = {"format": "tiedlib-dashboards", "version": 1, "meta": {k: _jsonable(v) for k, v in (meta or {}).items()},
            "latents": [dashboard_json(d) for d in dashboards]}  # fmt: skip
    (folder / "dashboards.json").write_text(json.dumps(data, indent=1), encoding="utf-8")
    return index

"""Token-highlighted top activations as static HTML (renders in the built book without a kernel), and an ipywidgets
latent browser (latent, group, dataset, k) whose every view is that same static HTML.

The static twin matters: saved widget views are not interactive without a kernel (REFERENCE.md), so the book shows
:func:`contexts_html` output, and :class:`LatentBrowser` also offers its current view as ``text/html`` for frontends
that cannot render widgets.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tiedlib.analysis.contexts import Context, TokenSample, latent_activations, top_k_contexts
from tiedlib.crosscoders.crosscoder import Crosscoder

GROUP_COLOURS = {"shared": (46, 125, 50), "base": (21, 101, 192), "chat": (198, 40, 40), "latent": (106, 27, 154)}
"""RGB of the highlight of each group (green shared, blue base, red chat; purple for standard latents)."""


def _show_token(text: str) -> str:
    """Visible, HTML-escaped token text: newlines as a return arrow, leading spaces kept."""
    return html.escape(text.replace("\n", "\u23ce")).replace(" ", "&nbsp;") or "&empty;"


def _decoder(tokenizer: Any) -> Callable[[int], str]:
    if callable(tokenizer) and not hasattr(tokenizer, "decode"):
        return tokenizer
    cache: dict[int, str] = {}

    def decode(i: int) -> str:
        if i not in cache:
            cache[i] = tokenizer.decode([i])
        return cache[i]

    return decode


def contexts_html(
    contexts: Sequence[Context],
    tokenizer: Any,
    *,
    title: str = "",
    colour: tuple[int, int, int] = GROUP_COLOURS["latent"],
    scale: float | None = None,
) -> str:
    """Render top-k contexts as token-highlighted HTML (one line per context, best first).

    Each token's background opacity is its activation over ``scale`` (default: the largest activation shown); the
    top token is outlined, tokens that were not harvested (BOS, template tokens) are grey, and hovering a token shows
    its activation.

    Args:
        contexts: from :func:`tiedlib.analysis.contexts.top_k_contexts`.
        tokenizer: anything with ``decode([id])``, or a callable ``id -> str``.
        title: a heading above the contexts.
        colour: RGB of the highlight.
        scale: activation that gets full opacity.
    """
    decode = _decoder(tokenizer)
    r, g, b = colour
    if scale is None:
        scale = max((c.value for c in contexts), default=1.0) or 1.0
    rows = []
    for rank, c in enumerate(contexts):
        spans = []
        for t, (tok, v) in enumerate(zip(c.token_ids, c.values, strict=False)):
            text = _show_token(decode(tok))
            if v is None or math.isnan(v):
                spans.append(f'<span style="color:#999" title="not harvested">{text}</span>')
                continue
            alpha = min(1.0, max(0.0, v / scale))
            border = "outline:2px solid #000;" if t == c.target else ""
            spans.append(f'<span style="background:rgba({r},{g},{b},{alpha:.2f});{border}" '
                         f'title="{v:.3f}">{text}</span>')  # fmt: skip
        rows.append(f'<div style="margin:2px 0;white-space:nowrap;overflow-x:auto">'
                    f'<span style="color:#666;display:inline-block;width:7em">#{rank + 1} {c.value:.2f}</span>'
                    f'<code style="background:none">{"".join(spans)}</code></div>')  # fmt: skip
    body = "".join(rows) if rows else '<div style="color:#666">(this latent never fires on this data)</div>'
    head = f'<div style="font-weight:bold;margin-top:6px">{html.escape(title)}</div>' if title else ""
    return f'<div class="tiedlib-contexts" style="font-size:12px;line-height:1.6">{head}{body}</div>'


def _group_names(model: Crosscoder) -> tuple[str, ...]:
    return ("shared", "base", "chat") if model.cfg.n_groups == 3 else ("latent",)


def latent_html(
    model: Crosscoder,
    samples: Mapping[str, TokenSample],
    tokenizer: Any,
    latent: int,
    *,
    groups: Sequence[str] | None = None,
    datasets: Sequence[str] | None = None,
    k: int = 10,
    before: int = 16,
    after: int = 4,
) -> str:
    """Static HTML of the top-``k`` contexts of latent ``latent``, for each group and dataset.

    Args:
        model: the crosscoder; its groups are named shared/base/chat (tied) or ``latent`` (standard).
        samples: ``{dataset name: TokenSample}`` (e.g. ``{"web": ..., "chat": ...}``).
        groups, datasets: subsets to show (default: all).
    """
    names = _group_names(model)
    groups = list(groups) if groups is not None else list(names)
    unknown = sorted(set(groups) - set(names))
    if unknown:
        raise ValueError(f"unknown group(s) {unknown}; this crosscoder has {list(names)}")
    datasets = list(datasets) if datasets is not None else list(samples)
    latents = [(names.index(g), latent) for g in groups]
    parts = [f'<div style="font-weight:bold;font-size:14px">latent {latent}</div>']
    for ds in datasets:
        s = samples[ds]
        acts = latent_activations(model, s.batches(), latents)
        for j, g in enumerate(groups):
            ctx = top_k_contexts(acts[:, j], s.doc_index, s.position, s.sequences, k, before=before, after=after)
            parts.append(contexts_html(ctx, tokenizer, title=f"{latent}-{g} on {ds} data (top {k})",
                                       colour=GROUP_COLOURS[g]))  # fmt: skip
    return "".join(parts)


class LatentBrowser:
    """ipywidgets browser over latent index, group, dataset and k; each view is :func:`latent_html`'s output.

    Displaying it in a notebook shows the widget; frontends without widget support (and the built book, where
    the saved view cannot be interactive) get the current view as static HTML. ``browser.html`` is that HTML.
    """

    def __init__(self, model: Crosscoder, samples: Mapping[str, TokenSample], tokenizer: Any, *,
                 latent: int = 0, group: str | None = None, dataset: str | None = None, k: int = 10,
                 latents: Sequence[int] | None = None) -> None:  # fmt: skip
        import ipywidgets as w

        self.model, self.samples, self.tokenizer = model, samples, tokenizer
        names = _group_names(model)
        n = model.cfg.n_latents
        self.latent = w.BoundedIntText(value=latent, min=0, max=n - 1, description="latent")
        if latents:
            self.latent = w.Combobox(value=str(latent), options=[str(i) for i in latents], description="latent",
                                     ensure_option=False)  # fmt: skip
        self.group = w.Dropdown(options=["all", *names], value=group or "all", description="group")
        self.dataset = w.Dropdown(options=["all", *samples], value=dataset or "all", description="dataset")
        self.k = w.IntSlider(value=k, min=1, max=30, description="k")
        self.view = w.HTML()
        self.error = w.HTML()
        for control in (self.latent, self.group, self.dataset, self.k):
            control.observe(lambda _change: self.refresh(), names="value")
        self.widget = w.VBox([w.HBox([self.latent, self.group]), w.HBox([self.dataset, self.k]), self.error,
                              self.view])  # fmt: skip
        self.refresh()

    @property
    def html(self) -> str:
        return self.view.value

    def refresh(self) -> None:
        """Recompute the view from the controls (called on every change)."""
        try:
            latent = int(self.latent.value)
            if not 0 <= latent < self.model.cfg.n_latents:
                raise ValueError(f"latent must be in [0, {self.model.cfg.n_latents})")
        except ValueError as err:
            self.error.value = f'<span style="color:#c62828">{html.escape(str(err))}</span>'
            return
        self.error.value = ""
        groups = None if self.group.value == "all" else [self.group.value]
        datasets = None if self.dataset.value == "all" else [self.dataset.value]
        self.view.value = latent_html(self.model, self.samples, self.tokenizer, latent, groups=groups,
                                      datasets=datasets, k=int(self.k.value))  # fmt: skip

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle = dict(self.widget._repr_mimebundle_(**kwargs) or {})
        bundle["text/html"] = self.html
        return bundle

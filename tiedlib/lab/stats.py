"""Ground-truth statistics of the lab corpus, for the lab-pair notebook and for checking experiments against.

Everything here reads the labels the generator attached to each token (:attr:`LabDoc.labels`) and the document
flags in :attr:`LabDoc.meta`; nothing looks at a model.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

import torch

from tiedlib.lab.docs import LabDoc


def concept_rates(docs: Sequence[LabDoc], concepts: Sequence[str]) -> dict[str, dict[str, float]]:
    """Per source (``"web"``, ``"chat"``) and concept: the share of tokens and of documents carrying the concept.

    Returns:
        ``{source: {"<concept>_tokens": fraction of tokens, "<concept>_docs": fraction of documents, "n_docs": ...,
        "n_tokens": ...}}``.
    """
    out: dict[str, dict[str, float]] = {}
    for source in sorted({d.source for d in docs}):
        group = [d for d in docs if d.source == source]
        n_tokens = sum(len(d.input_ids) for d in group)
        row: dict[str, float] = {"n_docs": float(len(group)), "n_tokens": float(n_tokens)}
        for c in concepts:
            flags = [d.labels.get(c, [False] * len(d.input_ids)) for d in group]
            row[f"{c}_tokens"] = sum(sum(f) for f in flags) / max(n_tokens, 1)
            row[f"{c}_docs"] = sum(any(f) for f in flags) / max(len(group), 1)
        out[source] = row
    return out


def flag_correlation(docs: Sequence[LabDoc], a: str, b: str) -> dict[str, float]:
    """Phi coefficient (Pearson correlation of two binary document flags ``meta[a]``, ``meta[b]``) per source.

    NaN for a source where either flag is constant. The lab corpus plants harm/refusal correlation: it should be
    clearly higher in chat data than in web data.
    """
    out = {}
    for source in sorted({d.source for d in docs}):
        group = [d for d in docs if d.source == source]
        x = torch.tensor([bool(d.meta.get(a)) for d in group], dtype=torch.float64)
        y = torch.tensor([bool(d.meta.get(b)) for d in group], dtype=torch.float64)
        ok = len(group) > 1 and x.std() > 0 and y.std() > 0
        out[source] = torch.corrcoef(torch.stack([x, y]))[0, 1].item() if ok else float("nan")
    return out


def labelled_html(doc: LabDoc, tokenizer, concepts: Sequence[str], colours: Sequence[str] | None = None) -> str:
    """One document as HTML with each token tinted by the first of ``concepts`` it carries (hover: all labels)."""
    palette = list(colours or ["#f4a6a6", "#a6c8f4", "#a6f4b5", "#f4e3a6", "#d7a6f4", "#a6f4ef", "#f4c6a6"])
    legend = " ".join(
        f'<span style="background:{palette[i % len(palette)]};padding:0 4px">{html.escape(c)}</span>'
        for i, c in enumerate(concepts)
    )
    spans = []
    for t, tok in enumerate(doc.input_ids):
        text = html.escape(tokenizer.decode([tok]).replace("\n", "\u23ce\n"))
        labels = [c for c in doc.labels if doc.labels[c][t]]
        shown = [i for i, c in enumerate(concepts) if c in labels]
        style = f"background:{palette[shown[0] % len(palette)]}" if shown else ""
        spans.append(f'<span style="{style}" title="{html.escape(", ".join(labels))}">{text}</span>')
    body = "".join(spans)
    return (f'<div style="font-size:12px"><div>{legend}</div>'
            f'<pre style="white-space:pre-wrap;margin:4px 0">{body}</pre></div>')  # fmt: skip

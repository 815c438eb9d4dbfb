"""Static HTML of top-k contexts and the ipywidgets latent browser, on hand-made inputs."""

from __future__ import annotations

import re

import pytest
import torch

from tests.helpers import make_model, random_rows
from tiedlib.analysis.contexts import Context, TokenSample
from tiedlib.analysis.widgets import LatentBrowser, contexts_html, latent_html

VOCAB = {0: "<pad>", 2: "<bos>", 10: " the", 11: " <cat>", 12: "\n", 13: " sat"}


def decode(i: int) -> str:
    return VOCAB.get(i, f" w{i}")


def test_contexts_html_highlights_scales_and_escapes():
    ctx = [Context(doc=0, position=2, value=4.0, token_ids=[2, 10, 11, 12], values=[float("nan"), 1.0, 4.0, 0.0],
                   target=2),
           Context(doc=1, position=1, value=2.0, token_ids=[10, 13], values=[0.0, 2.0], target=1)]  # fmt: skip
    html = contexts_html(ctx, decode, title="7-chat on chat data", colour=(198, 40, 40))
    assert "7-chat on chat data" in html
    assert "&lt;cat&gt;" in html and "<cat>" not in html  # escaped token text
    assert "\u23ce" in html  # newline made visible
    alphas = [float(a) for a in re.findall(r"rgba\(198,40,40,([0-9.]+)\)", html)]
    assert alphas == [0.25, 1.0, 0.0, 0.0, 0.5]  # value / max shown (4.0); BOS (nan) is grey, not highlighted
    assert html.count("outline:2px") == 2  # one top token per context
    assert html.index("#1 4.00") < html.index("#2 2.00")
    assert 'title="not harvested"' in html
    assert "never fires" in contexts_html([], decode)


def _sample(n_docs=6, length=8, d_model=16):
    seqs = [[2] + [10 + (d * 7 + t) % 30 for t in range(length - 1)] for d in range(n_docs)]
    doc = torch.arange(n_docs).repeat_interleave(length - 1)
    pos = torch.arange(1, length).repeat(n_docs)
    ids = torch.tensor([seqs[d][p] for d, p in zip(doc.tolist(), pos.tolist(), strict=False)])
    return TokenSample(random_rows(len(ids), d_model), ids, doc, pos, seqs, "x")


def test_latent_html_sections_per_group_and_dataset():
    model = make_model(architecture="tied")
    samples = {"web": _sample(), "chat": _sample()}
    html = latent_html(model, samples, decode, 3, k=2)
    for ds in ("web", "chat"):
        for g in ("shared", "base", "chat"):
            assert f"3-{g} on {ds} data (top 2)" in html
    only = latent_html(model, samples, decode, 3, groups=["base"], datasets=["chat"])
    assert "3-base on chat data" in only and "3-shared" not in only and "on web data" not in only
    with pytest.raises(ValueError, match="unknown group"):
        latent_html(make_model(), samples, decode, 0, groups=["chat"])


def test_browser_updates_and_falls_back_to_static_html():
    pytest.importorskip("ipywidgets")
    model = make_model(architecture="tied")
    samples = {"web": _sample(), "chat": _sample()}
    browser = LatentBrowser(model, samples, decode, latent=1, k=3)
    assert browser.html == latent_html(model, samples, decode, 1, k=3)
    browser.group.value = "chat"
    browser.dataset.value = "web"
    browser.latent.value = 5
    assert browser.html == latent_html(model, samples, decode, 5, groups=["chat"], datasets=["web"], k=3)
    bundle = browser._repr_mimebundle_()
    assert bundle["text/html"] == browser.html
    assert "application/vnd.jupyter.widget-view+json" in bundle
    picker = LatentBrowser(model, samples, decode, latent=2, latents=[2, 7])
    picker.latent.value = "99"  # out of range: an error message, the last view kept
    assert "must be in" in picker.error.value and "latent 2" in picker.html

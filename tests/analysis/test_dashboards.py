"""Per-latent dashboards: numbers for a known latent, HTML pages (escaped token text, inline SVG) and the JSON."""

from __future__ import annotations

import json

import pytest
import torch

from tests.helpers import make_model, random_rows
from tiedlib.analysis import dashboards as db
from tiedlib.analysis.contexts import TokenSample, latent_activations

VOCAB = {2: "<bos>", 10: " the", 11: " <cat>", 12: "\n", 13: " sat"}
D = 16


def decode(i: int) -> str:
    return VOCAB.get(i, f" w{i}")


def _sample(n_docs=5, length=8, seed=0):
    seqs = [[2] + [10 + (d * 7 + t) % 20 for t in range(length - 1)] for d in range(n_docs)]
    doc = torch.arange(n_docs).repeat_interleave(length - 1)
    pos = torch.arange(1, length).repeat(n_docs)
    ids = torch.tensor([seqs[d][p] for d, p in zip(doc.tolist(), pos.tolist(), strict=True)])
    return TokenSample(random_rows(len(ids), D, seed=seed), ids, doc, pos, seqs, "x")


@pytest.fixture
def planted():
    """A tied crosscoder whose triple 3's chat part fires hardest on token " <cat>" (doc 1, position 4) of the chat
    sample, and whose chat decoder vector of triple 3 raises token 11 most under the unembedding."""
    torch.manual_seed(0)
    model = make_model(architecture="tied", d_model=D)
    chat = _sample(seed=1)
    chat.sequences[1][4] = 11
    row = int(((chat.doc_index == 1) & (chat.position == 4)).nonzero())
    chat.token_ids[row] = 11
    w = model.W_enc.detach()[:, :, 2, 3]  # (model, d) encoder of the chat part of triple 3
    chat.acts[row] = 50 * w / w.pow(2).sum()
    W_U = torch.randn(D, 30) * 0.01
    W_U[:, 11] = model.W_dec.detach()[3, 1] * 10
    return model, {"web": _sample(), "chat": chat}, {"chat": W_U}


def test_known_latent_numbers(planted):
    model, samples, unemb = planted
    (d,) = db.build_dashboards(model, samples, [3], decode, unembeddings=unemb, notes={3: {"beta": 0.5}}, k=3, bins=5)
    top = d.parts["chat"]["chat"].contexts[0]
    assert (top.doc, top.tokens[top.target]) == (1, " <cat>")
    assert top.value == pytest.approx(float(latent_activations(model, samples["chat"].batches(), [(2, 3)]).max()))
    assert top.values[top.tokens.index("<bos>")] is None  # BOS was not harvested
    assert d.logits["chat"]["top"][0][0] == " <cat>" and "base" not in d.logits
    p = d.parts["shared"]["web"]
    assert sum(p.counts) == p.n_firing and len(p.edges) == 6 and p.n_tokens == len(samples["web"])
    assert d.relative_decoder_norm == pytest.approx(float(model.relative_decoder_norm()[3]))
    assert set(d.parts) == {"shared", "base", "chat"} and d.notes == {"beta": 0.5}
    with pytest.raises(ValueError, match="out of range"):
        db.build_dashboards(model, samples, [99], decode)


def test_export_writes_pages_index_and_json(planted, tmp_path):
    model, samples, unemb = planted
    dashes = db.build_dashboards(model, samples, [3, 5], decode, unembeddings=unemb, k=2)
    index = db.export_dashboards(dashes, tmp_path / "out", meta={"pair": "test"})
    out = tmp_path / "out"
    assert index == out / "index.html"
    assert {p.name for p in out.iterdir()} == {"index.html", "latent_3.html", "latent_5.html", "dashboards.json"}
    page = (out / "latent_3.html").read_text()
    assert "&lt;cat&gt;" in page and "<cat>" not in page  # token text is escaped (contexts and logit table)
    assert page.count("<svg") == 6 and "http" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "3-chat on chat data" in page and "decodes into: chat" in page
    assert "latent_5.html" in index.read_text()
    data = json.loads((out / "dashboards.json").read_text())
    assert data["format"] == "tiedlib-dashboards" and data["meta"] == {"pair": "test"}
    chat_part = next(p for p in data["latents"][0]["parts"] if p["part"] == "chat")
    first = chat_part["datasets"]["chat"]["activations"][0]
    assert first["tokens"][first["maxValueTokenIndex"]] == " <cat>"
    assert data["latents"][0]["logits"]["chat"]["pos_str"][0] == " <cat>"
    inline = db.dashboard_html(dashes[0], full_page=False)
    assert inline.startswith('<div class="tiedlib-dashboard">') and "<html>" not in inline


def test_histogram_svg_checks_its_input():
    svg = db.histogram_svg([0, 1, 2], [3, 1], title="a<b")
    assert svg.count("<rect") == 2 and "a&lt;b" in svg
    with pytest.raises(ValueError, match="one more edge"):
        db.histogram_svg([0, 1], [1, 2])


def test_latent_scaling_notes_label_the_part_and_ratios():
    from tiedlib.analysis.latent_scaling import LatentScaling

    ls = LatentScaling(torch.tensor([4, 9]), "chat", torch.tensor([[0.2, 1.0], [1.0, 2.0]]),
                       torch.tensor([[0.5, 0.0], [1.0, 1.0]]), torch.tensor([12, 3]))  # fmt: skip
    notes = db.latent_scaling_notes(ls)
    assert set(notes) == {4, 9}
    assert notes[4]["nu_reconstruction (chat part) (Latent Decoupling when large)"] == pytest.approx(0.2)
    assert notes[9]["nu_error (chat part) (Complete Shrinkage when large)"] == 0.0
    assert notes[4]["beta_error base / chat (chat part)"] == "0.5 / 1"
    assert notes[9]["tokens fired on (chat part) (Latent Scaling sample)"] == 3

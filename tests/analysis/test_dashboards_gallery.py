"""All dashboards in one HTML fragment (the notebook cell the book shows): index links to sections, scoped CSS, every
page body, escaped token text."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from tiedlib.analysis import dashboards as db
from tiedlib.analysis.dashboards import ContextRow, LatentDashboard, PartData


def _dashboard(latent: int, token: str = " ok") -> LatentDashboard:
    row = ContextRow([" a", token], [None, 1.5], 1, 1.5, 0)
    parts = {part: {ds: PartData([row], [0.0, 1.0, 2.0], [3, 1], 40, 4) for ds in ("web", "chat")}
             for part in ("shared", "base", "chat")}  # fmt: skip
    logits = {"chat": {"top": [(" yes", 2.0)], "bottom": [(" no", -1.0)]}}
    return LatentDashboard(latent, "tied", 0.25 * latent, parts, logits, {"beta_error base / chat": "0.1 / 0.9"})


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.hrefs: list[str] = []
        self.open_details = 0
        self.details = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.append(a["id"])
        if tag == "a":
            self.hrefs.append(a["href"])
        if tag == "details":
            self.details += 1
            self.open_details += "open" in a


def test_gallery_links_every_latent_to_its_section_with_its_page_body():
    pages = [_dashboard(3, token=" <b>x"), _dashboard(1)]
    out = db.gallery_html(pages, title="T <1>")
    parsed = _Collect()
    parsed.feed(out)
    assert parsed.details == 2 and parsed.open_details == 1  # the first page is open
    assert parsed.ids == [db.gallery_anchor(3), db.gallery_anchor(1)]
    assert parsed.hrefs == [f"#{db.gallery_anchor(3)}", f"#{db.gallery_anchor(1)}"]  # index links stay in the page
    for d in pages:
        assert db.dashboard_html(d, full_page=False) in out  # every field of each page: notes, logits, histograms
    assert "<b>x" not in out and "&lt;b&gt;x" in out and "T &lt;1&gt;" in out
    assert "<script" not in out and "index.html" not in out and "<html" not in out
    assert db.gallery_html(pages, open_first=False).count(" open>") == 0
    # the same index numbers as the exported index page
    assert re.findall(r"<td>[\d.%]+</td>", out) == re.findall(r"<td>[\d.%]+</td>", db.index_html(pages))


def test_gallery_css_is_scoped_and_leaves_the_page_alone():
    out = db.gallery_html([_dashboard(0)])
    css = out[out.index("<style>") + len("<style>") : out.index("</style>")]
    selectors = [sel.strip() for rule in filter(None, css.split("}")) for sel in rule.split("{")[0].split(",")]
    assert selectors and all(sel.startswith(".tiedlib-dashboards ") for sel in selectors)
    assert ".tiedlib-dashboards th" in selectors and ".tiedlib-dashboards .grid" in selectors
    assert "body" not in " ".join(selectors)
    with pytest.raises(ValueError, match="no dashboards"):
        db.gallery_html([])

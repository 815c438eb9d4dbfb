import math

from tiedlib.lab.docs import LabDoc
from tiedlib.lab.stats import concept_rates, flag_correlation, labelled_html


def _doc(source, ids, labels, **meta):
    return LabDoc(text="", input_ids=ids, labels=labels, source=source, meta=meta)


class _Tok:
    def decode(self, ids):
        return {1: "<bos>", 2: " blue", 3: " sky", 4: "\n"}[ids[0]]


def test_concept_rates_count_tokens_and_documents():
    docs = [
        _doc("web", [1, 2, 3], {"blue": [False, True, False]}),
        _doc("web", [1, 3], {"blue": [False, False]}),
        _doc("chat", [1, 2, 2, 4], {"blue": [False, True, True, False]}),
    ]
    rates = concept_rates(docs, ["blue", "green"])
    assert rates["web"]["blue_tokens"] == 1 / 5 and rates["web"]["blue_docs"] == 0.5
    assert rates["chat"]["blue_tokens"] == 0.5 and rates["chat"]["green_docs"] == 0
    assert rates["chat"]["n_docs"] == 1


def test_flag_correlation_is_phi_per_source():
    web = [_doc("web", [1], {}, harmful=h, refused=r) for h, r in [(1, 1), (1, 0), (0, 1), (0, 0)]]
    chat = [_doc("chat", [1], {}, harmful=h, refused=h) for h in [1, 1, 0, 0]]
    phi = flag_correlation(web + chat, "harmful", "refused")
    assert abs(phi["web"]) < 1e-12 and math.isclose(phi["chat"], 1.0)
    assert math.isnan(flag_correlation([_doc("web", [1], {}, harmful=1, refused=1)] * 2, "harmful", "refused")["web"])


def test_labelled_html_tints_labelled_tokens_and_escapes():
    doc = _doc("web", [1, 2, 4], {"blue": [False, True, False]})
    out = labelled_html(doc, _Tok(), ["blue"])
    assert 'title="blue"' in out and "&lt;bos&gt;" in out and out.count("background:#f4a6a6") == 2  # legend + token

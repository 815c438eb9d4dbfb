"""Dashboards in the batch layout of Neuronpedia's feature uploads (as SAEDashboard 0.8.0 writes them): one batch
per part, model and dataset. SAEDashboard's own batch class reads the files back in scripts/check_neuronpedia.py
(``sae_dashboard`` is not a dependency: its release pulls a CUDA torch), run by hand; its logic is tested here."""

from __future__ import annotations

import json

import pytest

from tests.helpers_findings import load_script
from tiedlib.analysis import dashboards as db
from tiedlib.analysis.dashboards import ContextRow, LatentDashboard, PartData

# The keyword arguments of SAEDashboard 0.8.0's NeuronpediaDashboardFeature / NeuronpediaDashboardActivation that a
# batch may carry (sae_dashboard/neuronpedia/neuronpedia_dashboard.py); unknown keys make its constructors fail.
FEATURE_KEYS = {
    "feature_index", "neuron_alignment_indices", "neuron_alignment_values", "neuron_alignment_l1",
    "correlated_neurons_indices", "correlated_neurons_l1", "correlated_neurons_pearson", "correlated_features_indices",
    "correlated_features_l1", "correlated_features_pearson", "neg_str", "neg_values", "pos_str", "pos_values",
    "frac_nonzero", "freq_hist_data_bar_values", "freq_hist_data_bar_heights", "logits_hist_data_bar_heights",
    "logits_hist_data_bar_values", "n_prompts_total", "n_tokens_in_prompt", "dataset", "activations",
    "decoder_weights_dist", "vector",
}  # fmt: skip
ACTIVATION_KEYS = {"bin_min", "bin_max", "bin_contains", "tokens", "values", "qualifying_token_index", "dfa_values",
                   "dfa_maxValue", "dfa_targetIndex"}  # fmt: skip


def _dashboard(latent: int, parts=("shared", "base", "chat")) -> LatentDashboard:
    out = {}
    for j, part in enumerate(parts):
        out[part] = {}
        for k, ds in enumerate(("web", "chat")):
            top = float(1 + j + k)
            row = ContextRow([" a", f" {part}-{ds}", " c"], [None, top, 0.5], 1, top, 0)
            out[part][ds] = PartData([row], [0.0, top / 2, top], [4, 2], 50, 6 + k)
    logits = {m: {"top": [(f" up-{m}", 2.0)], "bottom": [(f" down-{m}", -1.5)]} for m in ("base", "chat")}
    return LatentDashboard(latent, "tied" if len(parts) == 3 else "standard", 0.5, out, logits)


def test_batch_reads_one_part_through_one_model_on_one_dataset():
    pages = [_dashboard(5), _dashboard(2)]
    batch = db.neuronpedia_batch(pages, "chat", "chat", "web", model_id="gemma-2-2b-it", layer=14, sae_set="tied-chat")
    assert {k: batch[k] for k in ("model_id", "layer", "sae_set")} == {"model_id": "gemma-2-2b-it", "layer": 14,
                                                                      "sae_set": "tied-chat"}  # fmt: skip
    assert [f["feature_index"] for f in batch["features"]] == [5, 2]
    f = batch["features"][0]
    assert set(f) <= FEATURE_KEYS and all(set(a) <= ACTIVATION_KEYS for a in f["activations"])
    assert (f["pos_str"], f["pos_values"], f["neg_str"], f["neg_values"]) == ([" up-chat"], [2.0], [" down-chat"],
                                                                             [-1.5])  # fmt: skip
    assert f["frac_nonzero"] == pytest.approx(6 / 50) and f["dataset"] == "web"
    assert f["freq_hist_data_bar_values"] == [0.75, 2.25] and f["freq_hist_data_bar_heights"] == [4.0, 2.0]
    (act,) = f["activations"]
    assert act["tokens"] == [" a", " chat-web", " c"] and act["values"] == [0.0, 3.0, 0.5]  # None -> 0.0
    assert act["qualifying_token_index"] == 1 and (act["bin_min"], act["bin_max"], act["bin_contains"]) == (-1, 3.0, -1)
    with pytest.raises(ValueError, match="does not decode into"):
        db.neuronpedia_batch(pages, "base", "chat", "web", model_id="m", layer=1, sae_set="s")
    with pytest.raises(ValueError, match="no 'chat' part"):
        db.neuronpedia_batch([_dashboard(0, parts=("latent",))], "chat", "chat", "web", model_id="m", layer=1,
                             sae_set="s")  # fmt: skip


def test_export_writes_each_part_for_each_model_it_decodes_into(tmp_path):
    pages = [_dashboard(1), _dashboard(4)]
    paths = db.export_neuronpedia(pages, tmp_path / "np", model_ids={"base": "b", "chat": "c"}, layer=3, set_name="x")
    names = sorted(p.name for p in paths)
    assert names == sorted(f"{m}-{p}-{d}.json" for m, ps in (("base", ("shared", "base")), ("chat", ("shared", "chat")))
                           for p in ps for d in ("web", "chat"))  # fmt: skip
    data = json.loads((tmp_path / "np" / "base-shared-chat.json").read_text())
    assert data["sae_set"] == "x-shared" and data["model_id"] == "b"
    assert data["features"][1]["activations"][0]["tokens"][1] == " shared-chat"
    standard = db.export_neuronpedia([_dashboard(0, parts=("latent",))], tmp_path / "std", model_ids={"chat": "c"},
                                     layer=3, set_name="s")  # fmt: skip
    assert sorted(p.name for p in standard) == ["chat-latent-chat.json", "chat-latent-web.json"]
    with pytest.raises(ValueError, match="keyed by model"):
        db.export_neuronpedia(pages, tmp_path, model_ids={"it": "c"}, layer=3, set_name="s")
    with pytest.raises(ValueError, match="no dashboards"):
        db.export_neuronpedia([], tmp_path, model_ids={"chat": "c"}, layer=3, set_name="s")


def test_read_back_script_reports_a_value_that_changes(tmp_path, monkeypatch, capsys):
    """scripts/check_neuronpedia.py (run by hand where sae_dashboard is installed: README) parses each batch with
    SAEDashboard's batch class and compares every written value with the feature's ``to_dict()``; here a stand-in
    class, which can be told to change one value on the way back."""
    import sys
    import types

    change: dict[str, object] = {}

    class Feature:
        def __init__(self, data):
            self.data = data

        def to_dict(self):
            return {**self.data, **change}

    class Batch:
        def __init__(self, *, features, **_):
            self.features = [Feature(f) for f in features]

    fake = types.ModuleType("sae_dashboard.neuronpedia.neuronpedia_dashboard")
    fake.NeuronpediaDashboardBatch = Batch
    for name in ("sae_dashboard", "sae_dashboard.neuronpedia"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, fake.__name__, fake)
    script = load_script("check_neuronpedia.py", "check_neuronpedia")
    db.export_neuronpedia([_dashboard(7), _dashboard(9)], tmp_path, model_ids={"chat": "c"}, layer=3, set_name="s")
    assert script.check(tmp_path) == 0 and "4 batch files, 8 features read back unchanged" in capsys.readouterr().out
    change["frac_nonzero"] = 0.5
    assert script.check(tmp_path) == 1 and "'frac_nonzero' reads back differently" in capsys.readouterr().out
    assert script.check(tmp_path / "empty") == 1

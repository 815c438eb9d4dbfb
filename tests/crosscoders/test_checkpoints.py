import json

import pytest
import torch

from tests.helpers import make_model
from tiedlib import StandardCrosscoder, TiedCrosscoder, load_crosscoder
from tiedlib.crosscoders.checkpoints import LatentRef, resolve_latent, weights_fingerprint


def _write_released(folder, model, name, cfg_extra=None):
    """Write a checkpoint the way the public runs released theirs: torch.save(state_dict) + <name>_cfg.json."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.clone() for k, v in model.state_dict().items()}, folder / f"{name}.pt")
    cfg = {"d_in": model.cfg.d_model, "dict_size": model.cfg.n_latents, "dec_init_norm": 0.08, "seq_len": 1024}
    cfg.update(cfg_extra or {})
    (folder / f"{name}_cfg.json").write_text(json.dumps(cfg))
    return folder / f"{name}.pt"


def test_loads_released_tied_layout_with_default_eta(tmp_path):
    model = make_model(architecture="tied", eta=0.5)
    path = _write_released(tmp_path / "tied", model, "tied_crosscoder_eta_2")
    loaded = load_crosscoder(path)
    assert isinstance(loaded, TiedCrosscoder)
    assert loaded.cfg.eta == 2.0  # released tied run used eta = 2 and its config does not say so
    assert torch.equal(loaded.W_enc, model.W_enc)
    # a folder holding one such pair works too, and eta can be overridden
    assert load_crosscoder(tmp_path / "tied", eta=1.0).cfg.eta == 1.0


def _write_standard_release(root, model):
    """The standard release's layout: ``blocks.14.hook_resid_pre/cc_weights.pt`` and ``cfg.json`` beside it."""
    folder = root / "blocks.14.hook_resid_pre"
    folder.mkdir(parents=True)
    torch.save({k: v.clone() for k, v in model.state_dict().items()}, folder / "cc_weights.pt")
    (folder / "cfg.json").write_text(json.dumps({"d_in": model.cfg.d_model, "dict_size": model.cfg.n_latents,
                                                 "hook_point": "blocks.14.hook_resid_pre", "seq_len": 1024}))
    return folder


def test_loads_released_standard_layout_from_its_folder_or_file(tmp_path):
    model = make_model()
    folder = _write_standard_release(tmp_path / "repo", model)
    x = torch.randn(4, 2, 16)
    for path in (folder, folder / "cc_weights.pt"):
        loaded = load_crosscoder(path)
        assert isinstance(loaded, StandardCrosscoder)
        torch.testing.assert_close(loaded(x).x_hat, model(x).x_hat)
        assert loaded.source == "ckkissane/crosscoder-gemma-2-2b-model-diff/blocks.14.hook_resid_pre/cc_weights.pt"


def test_loads_releases_by_hub_repo_id(tmp_path, monkeypatch):
    """``load_crosscoder(repo)`` fetches exactly the released files with hf_hub_download (here served from local
    folders laid out like the two repositories)."""
    import huggingface_hub

    std, tied = make_model(), make_model(architecture="tied")
    _write_standard_release(tmp_path / "ckkissane/crosscoder-gemma-2-2b-model-diff", std)
    _write_released(tmp_path / "sa7270/tied-crosscoder", tied, "tied_crosscoder_eta_2")
    fetched = []

    def fake_download(repo_id, filename, *, subfolder=None, **_kw):
        fetched.append((repo_id, subfolder, filename))
        return str(tmp_path / repo_id / (subfolder or "") / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    a = load_crosscoder("ckkissane/crosscoder-gemma-2-2b-model-diff")
    b = load_crosscoder("sa7270/tied-crosscoder")
    assert fetched == [
        ("ckkissane/crosscoder-gemma-2-2b-model-diff", "blocks.14.hook_resid_pre", "cc_weights.pt"),
        ("ckkissane/crosscoder-gemma-2-2b-model-diff", "blocks.14.hook_resid_pre", "cfg.json"),
        ("sa7270/tied-crosscoder", None, "tied_crosscoder_eta_2.pt"),
        ("sa7270/tied-crosscoder", None, "tied_crosscoder_eta_2_cfg.json"),
    ]
    assert torch.equal(a.W_enc, std.W_enc) and torch.equal(b.W_enc, tied.W_enc)
    load_crosscoder("ckkissane/crosscoder-gemma-2-2b-model-diff", subfolder="blocks.14.hook_resid_pre")
    with pytest.raises(FileNotFoundError, match="not one of the known releases"):
        load_crosscoder("someone/else")


def test_an_uncached_release_offline_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))  # an empty cache; HF_HUB_OFFLINE=1 (conftest)
    with pytest.raises(FileNotFoundError, match="tied_crosscoder_eta_2.pt and tied_crosscoder_eta_2_cfg.json"):
        load_crosscoder("sa7270/tied-crosscoder")


def test_released_checkpoints_refuse_raw_activations_until_factors_are_known(tmp_path):
    from tiedlib.activations.harvest import HarvestBatch
    from tiedlib.analysis.firing import firing_counts

    model = make_model(architecture="tied")
    path = _write_released(tmp_path / "tied", model, "tied_crosscoder_eta_2")
    released = load_crosscoder(path)
    assert released.cfg.needs_norm_factors and released.cfg.norm_factors is None
    raw = torch.randn(8, 2, 16) * 4
    batch = HarvestBatch(raw, torch.arange(8), torch.arange(8), torch.arange(8))
    for fn in (lambda: released.normalize(raw), released.fold_normalization,
               lambda: firing_counts(released, iter([batch]))):
        with pytest.raises(ValueError, match="does not store the normalisation factors"):
            fn()
    given = load_crosscoder(path, norm_factors=[0.28, 0.25])  # e.g. the published factors
    torch.testing.assert_close(given.normalize(raw), raw * torch.tensor([0.28, 0.25])[None, :, None])
    released.set_norm_factors_(torch.tensor([0.3, 0.2]))  # e.g. tiedlib.estimate_norm_factors(...)
    assert released.cfg.norm_factors == pytest.approx([0.3, 0.2]) and not released.cfg.needs_norm_factors
    firing_counts(released, iter([batch]))
    released.save_pretrained(tmp_path / "ours")
    assert load_crosscoder(tmp_path / "ours").cfg.norm_factors == pytest.approx([0.3, 0.2])


def test_a_latent_index_is_used_only_with_its_checkpoint(tmp_path):
    tied = make_model(architecture="tied")
    path = _write_released(tmp_path / "tied", tied, "tied_crosscoder_eta_2")
    ref = LatentRef(10, "sa7270/tied-crosscoder/tied_crosscoder_eta_2.pt")
    assert resolve_latent(ref, load_crosscoder(path)) == 10
    trained = make_model(architecture="tied")
    with pytest.raises(ValueError, match="latent 10 was chosen in checkpoint 'sa7270/tied-crosscoder/"):
        resolve_latent(ref, trained)
    mine = LatentRef(3, weights_fingerprint(trained))  # a latent chosen in a crosscoder trained here
    assert mine.resolve(trained) == 3
    trained.save_pretrained(tmp_path / "run")
    assert mine.resolve(load_crosscoder(tmp_path / "run")) == 3
    with pytest.raises(ValueError, match="unrelated feature"):
        mine.resolve(tied)
    with pytest.raises(ValueError, match="out of range"):
        LatentRef(64, weights_fingerprint(trained)).resolve(trained)
    assert resolve_latent(7, trained) == 7 and resolve_latent(None, trained) is None


def test_loads_our_own_folders(tmp_path):
    model = make_model(architecture="tied", norm_factors=[0.3, 0.2])
    model.save_pretrained(tmp_path / "ours")
    loaded = load_crosscoder(tmp_path / "ours")
    assert loaded.cfg == model.cfg and torch.equal(loaded.W_dec, model.W_dec)


def test_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no crosscoder at"):
        load_crosscoder(tmp_path / "nothing")
    model = make_model()
    path = _write_released(tmp_path / "a", model, "w", {"d_in": 99})
    with pytest.raises(ValueError, match="d_in=99"):
        load_crosscoder(path)
    (tmp_path / "b").mkdir()
    torch.save(model.state_dict(), tmp_path / "b" / "w.pt")
    with pytest.raises(FileNotFoundError, match="w_cfg.json"):
        load_crosscoder(tmp_path / "b" / "w.pt")
    # a pickle holding arbitrary objects is refused (weights_only=True)
    (tmp_path / "c").mkdir()
    torch.save({"W_enc": object()}, tmp_path / "c" / "x.pt")
    (tmp_path / "c" / "x_cfg.json").write_text("{}")
    with pytest.raises(ValueError, match="weights_only"):
        load_crosscoder(tmp_path / "c" / "x.pt")
    state = {k: v for k, v in model.state_dict().items() if k != "b_dec"}
    (tmp_path / "d").mkdir()
    torch.save(state, tmp_path / "d" / "y.pt")
    (tmp_path / "d" / "y_cfg.json").write_text("{}")
    with pytest.raises(ValueError, match="lacks parameters"):
        load_crosscoder(tmp_path / "d")

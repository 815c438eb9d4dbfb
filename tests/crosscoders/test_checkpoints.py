import json

import pytest
import torch

from tests.helpers import make_model
from tiedlib import StandardCrosscoder, TiedCrosscoder, load_crosscoder


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


def test_loads_released_standard_layout(tmp_path):
    model = make_model()
    path = _write_released(tmp_path / "std", model, "cc_weights", {"eta": 3.0})
    loaded = load_crosscoder(path)
    assert isinstance(loaded, StandardCrosscoder)
    x = torch.randn(4, 2, 16)
    torch.testing.assert_close(loaded(x).x_hat, model(x).x_hat)


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

"""Dead-latent resampling of a tied crosscoder's exclusive groups (issue 15; Bricken et al. 2023)."""

import pytest
import torch

from tests.helpers import make_train_cfg, random_rows
from tiedlib.activations.batches import InMemoryBatches
from tiedlib.config import BASE, BASE_ONLY, CHAT, CHAT_ONLY, SHARED, CrosscoderConfig
from tiedlib.crosscoders.crosscoder import make_crosscoder
from tiedlib.synthetic.benchmark import make_synthetic
from tiedlib.synthetic.grid import ARCHS, GRID_SCALES, RESAMPLE_AT, train_config
from tiedlib.synthetic.resample import resample_dead_exclusive_, resample_steps, train_resampling
from tiedlib.training import train
from tiedlib.training.loop import make_optimizer, train_step


def _tied(seed: int = 0):
    torch.manual_seed(seed)
    return make_crosscoder(CrosscoderConfig(d_model=16, n_latents=24, architecture="tied"))


def test_a_dead_exclusive_latent_is_revived_and_only_its_rows_change():
    model, x = _tied(), random_rows(512)
    opt, _ = make_optimizer(model, make_train_cfg())
    train_step(model, opt, x[:64], l1_coeff=0.1)  # gives Adam a state to reset
    with torch.no_grad():
        model.b_enc[BASE_ONLY, 3] = -1e3  # base latent 3 dead, its shared latent alive: the decoder half is in use
        model.b_enc[BASE_ONLY, 5] = -1e3  # base latent 5 dead and its shared latent dead: the base half is free
        model.b_enc[SHARED, 5] = -1e3
        model.b_enc[CHAT_ONLY, 7] = -1e3
    alive_before = (model.encode(x) > 0).any(dim=0)
    assert not alive_before[BASE_ONLY, 3] and not alive_before[BASE_ONLY, 5] and not alive_before[CHAT_ONLY, 7]
    dead_before = int((~alive_before[1:]).sum())
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    counts = resample_dead_exclusive_(model, x, optimizer=opt, generator=torch.Generator().manual_seed(0))
    assert counts["base"] + counts["chat"] == dead_before >= 3 and counts["decoders"] >= 1
    fired = (model.encode(x) > 0).any(dim=0)
    assert fired[BASE_ONLY, 3] and fired[BASE_ONLY, 5] and fired[CHAT_ONLY, 7]  # revived
    W_enc, W_dec = model.W_enc.detach(), model.W_dec.detach()
    assert not torch.equal(W_enc[:, :, BASE_ONLY, 3], before["W_enc"][:, :, BASE_ONLY, 3])
    assert model.b_enc[BASE_ONLY, 3] == 0 and model.b_enc[CHAT_ONLY, 7] == 0
    # Bricken et al.: the new encoder column is 0.2 x the mean norm of the alive latents' columns
    alive_norm = before["W_enc"].norm(dim=(0, 1))[alive_before].mean()
    assert W_enc[:, :, BASE_ONLY, 3].norm() == pytest.approx(0.2 * float(alive_norm), rel=1e-5)
    assert torch.equal(W_dec[3], before["W_dec"][3])  # the shared latent 3 keeps its decoder
    assert not torch.equal(W_dec[5, BASE], before["W_dec"][5, BASE])  # free half rewritten ...
    assert torch.equal(W_dec[5, CHAT], before["W_dec"][5, CHAT])  # ... the chat half is not the base latent's
    assert torch.equal(W_enc[:, :, SHARED], before["W_enc"][:, :, SHARED])  # alive latents untouched
    assert torch.equal(W_enc[:, :, BASE_ONLY, alive_before[BASE_ONLY]],
                       before["W_enc"][:, :, BASE_ONLY, alive_before[BASE_ONLY]])  # fmt: skip
    state = opt.state[model.W_enc]
    assert state["exp_avg_sq"][:, :, BASE_ONLY, 3].abs().sum() == 0
    assert state["exp_avg_sq"][:, :, SHARED].abs().sum() > 0
    assert opt.state[model.W_dec]["exp_avg_sq"][5, BASE].abs().sum() == 0
    assert opt.state[model.W_dec]["exp_avg_sq"][3, BASE].abs().sum() > 0


def test_resampling_refuses_bad_input():
    with pytest.raises(ValueError, match="needs a tied crosscoder"):
        resample_dead_exclusive_(make_crosscoder(CrosscoderConfig(d_model=16, n_latents=8)), random_rows(8))
    with pytest.raises(ValueError, match="expected rows of shape"):
        resample_dead_exclusive_(_tied(), torch.zeros(8, 16))
    with pytest.raises(ValueError, match="must lie in"):
        resample_steps(100, (0.5, 1.0))
    assert resample_steps(500, RESAMPLE_AT) == [100, 200, 300]


def test_without_resample_steps_the_loop_matches_train():
    x, cfg = random_rows(1024), make_train_cfg(n_steps=12, l1_coeff=0.5)
    a = train(cfg, _tied(), InMemoryBatches(x, 64, seed=0, epochs=None))
    b = train_resampling(cfg, _tied(), InMemoryBatches(x, 64, seed=0, epochs=None), sample=x, steps=[])
    for name, p in a.named_parameters():
        assert torch.equal(p, getattr(b, name)), name


def test_grid_resample_entries_train_and_revive(monkeypatch):
    import tiedlib.synthetic.resample as resample

    calls = []
    original = resample.resample_dead_exclusive_

    def counting(model, x, **kw):
        calls.append(original(model, x, **kw))
        return calls[-1]

    monkeypatch.setattr(resample, "resample_dead_exclusive_", counting)
    setting = GRID_SCALES["smoke"].base
    data = make_synthetic(setting.synthetic)
    model = train_config("tied_written_resample", setting, data, eta=1.5, seed=0)
    assert len(calls) == len(RESAMPLE_AT) and model.cfg.shared_penalty == "written"
    assert ARCHS["tied_resample"].resample == RESAMPLE_AT and not ARCHS["tied_written"].resample

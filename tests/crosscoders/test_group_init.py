"""Distinct starts of the tied encoder's groups (issue 15: ``CrosscoderConfig.group_init``)."""

import pytest
import torch

from tiedlib.config import BASE, BASE_ONLY, CHAT, CHAT_ONLY, SHARED, CrosscoderConfig
from tiedlib.crosscoders import load_crosscoder
from tiedlib.crosscoders.crosscoder import init_groups_, make_crosscoder
from tiedlib.crosscoders.variants import contrast_init_


def _tied(group_init: str, seed: int = 0, **over):
    torch.manual_seed(seed)
    return make_crosscoder(CrosscoderConfig(d_model=8, n_latents=12, architecture="tied", group_init=group_init,
                                            **over))  # fmt: skip


def test_copies_is_the_default_and_its_groups_are_identical():
    assert CrosscoderConfig(d_model=8, n_latents=12).group_init == "copies"
    W = _tied("copies").W_enc
    assert torch.equal(W[:, :, SHARED], W[:, :, BASE_ONLY]) and torch.equal(W[:, :, SHARED], W[:, :, CHAT_ONLY])


def test_one_sided_exclusive_groups_read_only_their_own_model():
    copies, one = _tied("copies").W_enc, _tied("one_sided").W_enc
    assert torch.equal(one[:, :, SHARED], copies[:, :, SHARED])  # the shared group keeps the write-up's start
    assert torch.equal(one[BASE, :, BASE_ONLY], copies[BASE, :, BASE_ONLY])
    assert torch.count_nonzero(one[CHAT, :, BASE_ONLY]) == 0 and torch.count_nonzero(one[BASE, :, CHAT_ONLY]) == 0
    assert torch.equal(one[CHAT, :, CHAT_ONLY], copies[CHAT, :, CHAT_ONLY])
    # at step 0 a base latent no longer fires on a row that only the chat model has
    model = _tied("one_sided")
    x = torch.zeros(1, 2, 8)
    x[0, CHAT] = model.W_dec[3, CHAT].detach()
    f = model.encode(x)
    assert f[0, BASE_ONLY].abs().sum() == 0 and f[0, CHAT_ONLY, 3] > 0


def test_contrast_matches_the_variant_function_and_the_decoder_is_untouched():
    copies, con = _tied("copies"), _tied("contrast")
    expected = copies.W_enc.detach().clone()
    contrast_init_(expected)
    assert torch.equal(con.W_enc, expected)
    assert torch.equal(con.W_dec, copies.W_dec) and not torch.equal(con.W_enc, copies.W_enc)


def test_group_init_survives_save_and_load(tmp_path):
    model = _tied("one_sided")
    model.save_pretrained(tmp_path / "cc")
    back = load_crosscoder(tmp_path / "cc")
    assert back.cfg.group_init == "one_sided" and back.cfg == model.cfg
    assert torch.equal(back.W_enc, model.W_enc)
    # configs at the default save the same JSON as before the field existed
    assert "group_init" not in CrosscoderConfig(d_model=8, n_latents=12, architecture="tied").to_dict()
    assert CrosscoderConfig.from_dict(model.cfg.to_dict()).group_init == "one_sided"


def test_bad_group_init_is_refused():
    with pytest.raises(ValueError, match="group_init must be"):
        CrosscoderConfig(d_model=8, n_latents=12, architecture="tied", group_init="random")
    with pytest.raises(ValueError, match="needs architecture='tied'"):
        CrosscoderConfig(d_model=8, n_latents=12, group_init="one_sided")
    with pytest.raises(ValueError, match="expected a tied encoder"):
        init_groups_(torch.zeros(2, 8, 12), "one_sided")

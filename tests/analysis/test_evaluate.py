"""Spliced CE/KL on a tiny random Gemma-2 pair: known answers for perfect and zero reconstructions."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tests.helpers import make_model
from tests.helpers_models import random_sequences, tiny_gemma2, tiny_tokenizer
from tiedlib.analysis.evaluate import crosscoder_reconstructor, spliced_losses, spliced_table
from tiedlib.config import CrosscoderConfig
from tiedlib.crosscoders import StandardCrosscoder
from tiedlib.pairs import ModelPair, wrap

D_MODEL = 32


@pytest.fixture(scope="module")
def pair() -> ModelPair:
    tok = tiny_tokenizer()
    base, chat = tiny_gemma2(seed=0, d_model=D_MODEL), tiny_gemma2(seed=1, d_model=D_MODEL)
    return ModelPair(name="test", base=wrap(base, tok), chat=wrap(chat, tok), tokenizer=tok, layer=2,
                     d_model=D_MODEL, base_hf=base, chat_hf=chat)  # fmt: skip


@pytest.fixture(scope="module")
def sequences(pair):
    return random_sequences(4, 4, 12, len(pair.tokenizer), seed=3)


def perfect_crosscoder(norm_factors) -> StandardCrosscoder:
    """A ReLU crosscoder that reconstructs exactly: one latent per (model, coordinate, sign), +-e_i in and out."""
    cfg = CrosscoderConfig(d_model=D_MODEL, n_latents=4 * D_MODEL, norm_factors=norm_factors)
    model = StandardCrosscoder(cfg)
    with torch.no_grad():
        model.W_enc.zero_()
        model.W_dec.zero_()
        j = 0
        for m in range(2):
            for i in range(D_MODEL):
                for sign in (1.0, -1.0):
                    model.W_enc[m, i, j] = sign
                    model.W_dec[j, m, i] = sign
                    j += 1
    return model.eval()


def test_identity_reconstruction_recovers_everything_and_zero_nothing(pair, sequences):
    perfect = spliced_losses(pair, sequences, lambda x: x.clone(), batch_size=2)
    zero = spliced_losses(pair, sequences, torch.zeros_like, batch_size=3)
    for name in ("base", "chat"):
        p, z = perfect[name], zero[name]
        assert p.ce_clean == pytest.approx(z.ce_clean, abs=1e-9)
        assert p.ce_zero != pytest.approx(p.ce_clean, abs=1e-3)  # ablation must cost something to be a test
        assert p.recovered == pytest.approx(1.0, abs=1e-5)
        assert p.kl == pytest.approx(0.0, abs=1e-6)
        assert z.recovered == pytest.approx(0.0, abs=1e-6)
        assert z.ce_spliced == pytest.approx(z.ce_zero, abs=1e-9)
        assert z.kl > 0
        # one prediction per non-BOS token that has a next token
        assert p.n_predictions == sum(len(s) - 2 for s in sequences)


def test_clean_loss_matches_a_plain_forward_and_ignores_padding(pair, sequences):
    got = spliced_losses(pair, sequences, torch.zeros_like, batch_size=len(sequences))["chat"]
    nll = []
    for s in sequences:  # no padding, one sequence at a time
        with torch.no_grad():
            logits = pair.chat_hf(torch.tensor([s])).logits[0]
        nll.append(F.cross_entropy(logits[1:-1], torch.tensor(s[2:]), reduction="none"))
    assert got.ce_clean == pytest.approx(float(torch.cat(nll).mean()), abs=1e-5)
    one_by_one = spliced_losses(pair, sequences, torch.zeros_like, batch_size=1)["chat"]
    assert one_by_one.ce_zero == pytest.approx(got.ce_zero, abs=1e-5)


def test_a_perfect_crosscoder_with_norm_factors_splices_raw_activations(pair, sequences):
    model = perfect_crosscoder([0.5, 2.0])
    x = torch.randn(7, 2, D_MODEL)
    assert torch.allclose(crosscoder_reconstructor(model)(x), x, atol=1e-5)
    result = spliced_losses(pair, sequences, model, batch_size=4)
    for loss in result.values():
        assert loss.recovered == pytest.approx(1.0, abs=1e-4)
        assert loss.kl == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("architecture", ["standard", "tied"])
def test_random_crosscoders_give_a_table_row_per_model(pair, sequences, architecture):
    model = make_model(architecture=architecture, d_model=D_MODEL, norm_factors=[0.3, 0.4]).eval()
    table = spliced_table({architecture: spliced_losses(pair, sequences, model)})
    assert list(table.index) == [(architecture, "base"), (architecture, "chat")]
    assert table["kl"].gt(0).all()
    assert all(math.isfinite(v) for v in table["recovered"])


def test_bad_inputs_are_named(pair, sequences):
    with pytest.raises(ValueError, match="no sequences"):
        spliced_losses(pair, [], torch.zeros_like)
    with pytest.raises(ValueError, match="reconstruction has shape"):
        spliced_losses(pair, sequences, lambda x: x[:, :1])
    with pytest.raises(ValueError, match="no prediction"):
        spliced_losses(pair, [[1, 7]], torch.zeros_like)
    released = make_model(d_model=D_MODEL, needs_norm_factors=True)
    with pytest.raises(ValueError, match="normalisation factors"):
        crosscoder_reconstructor(released)

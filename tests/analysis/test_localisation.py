"""Token roles from token ids and activation-mass fractions against a direct computation."""

from __future__ import annotations

import math

import pytest
import torch

from tests.helpers import make_model
from tests.helpers_models import tiny_tokenizer
from tiedlib.activations.harvest import HarvestBatch
from tiedlib.analysis.localisation import TokenRoles, assistant_mask, localisation, token_roles, turn_token_ids


def test_assistant_mask_and_roles_of_a_conversation():
    tok = tiny_tokenizer()
    start, end, role = turn_token_ids(tok)
    conv = tok.apply_chat_template([{"role": "user", "content": "hello how are you"},
                                    {"role": "assistant", "content": "i am fine"}], tokenize=False)  # fmt: skip
    ids = tok(conv, add_special_tokens=False)["input_ids"]
    words = tok.convert_ids_to_tokens(ids)
    inside = [w for w, a in zip(words, assistant_mask(ids, start, end, role), strict=True) if a]
    assert inside == ["i", "am", "fine"]
    # "model" as a plain word (not after <start_of_turn>) opens no turn; an open turn runs to the end
    assert assistant_mask([7, role, 9, start, role, 9, 9], start, end, role) == [False] * 5 + [True, True]
    # harvested rows: BOS dropped, so rows map through doc_index/position
    keep = [t for t in range(len(ids)) if ids[t] != tok.bos_token_id]
    h = HarvestBatch(torch.zeros(len(keep), 2, 4), torch.tensor([ids[t] for t in keep]), torch.zeros(len(keep)).long(),
                     torch.tensor(keep))  # fmt: skip
    roles = token_roles(h, [ids], [start, end], (start, end, role))
    got = {w: (bool(tp), bool(a)) for w, tp, a in zip([words[t] for t in keep], roles.template, roles.assistant,
                                                         strict=True)}  # fmt: skip
    assert got["<start_of_turn>"] == (True, False) and got["fine"] == (False, True) and got["hello"] == (False, False)
    with pytest.raises(ValueError, match="no '<start_of_turn>'"):
        turn_token_ids(type("T", (), {"convert_tokens_to_ids": lambda self, t: 3, "unk_token_id": 3})())


@pytest.mark.parametrize("architecture", ["standard", "tied"])
def test_fractions_match_a_direct_computation(architecture):
    model = make_model(architecture=architecture, norm_factors=[0.5, 2.0])
    with torch.no_grad():
        model.b_enc.normal_(0, 0.3)
    acts = torch.randn(300, 2, 16)
    roles_t, roles_a = torch.rand(300) < 0.3, torch.rand(300) < 0.4
    roles = TokenRoles(roles_t, roles_a & ~roles_t)
    group = "chat" if architecture == "tied" else None
    loc = localisation(model, acts, roles, range(64), group=group, chunk_size=70)
    with torch.no_grad():
        f = model.encode(model.normalize(acts))
    f = f[:, 2] if architecture == "tied" else f
    mass = f.sum(0)
    assert torch.allclose(loc.mass, mass, rtol=1e-4)
    fired = mass > 0
    assert fired.any() and (~fired).any()  # both cases covered
    assert torch.allclose(loc.template_fraction[fired], (f[roles.template].sum(0) / mass)[fired], atol=1e-5)
    assert torch.allclose(loc.assistant_fraction[fired], (f[roles.assistant].sum(0) / mass)[fired], atol=1e-5)
    assert loc.template_fraction[~fired].isnan().all()
    expected = float(((f[roles.template].sum(0) / mass)[fired] > 0.5).float().mean())
    assert loc.share_mainly("template") == pytest.approx(expected)
    with pytest.raises(ValueError, match="roles have"):
        localisation(model, acts[:10], roles, [0], group=group)


def test_a_latent_that_fires_only_on_template_tokens():
    model = make_model(n_latents=2)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.W_enc[1, 0, 0] = 1.0  # latent 0: chat coordinate 0, positive only on template rows below
        model.b_enc[1] = 1.0  # latent 1: fires 1.0 everywhere
    template = torch.arange(10) < 3
    acts = torch.zeros(10, 2, 16)
    acts[template, 1, 0] = 2.0
    loc = localisation(model, acts, TokenRoles(template, torch.zeros(10, dtype=torch.bool)), [0, 1])
    assert loc.template_fraction.tolist() == pytest.approx([1.0, 0.3])
    assert loc.mainly("template").tolist() == [True, False]
    assert loc.share_mainly("assistant") == 0.0
    assert math.isnan(localisation(model, acts[3:], TokenRoles(template[3:], template[3:]), [0]).share_mainly())

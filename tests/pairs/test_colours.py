import json

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from tests.helpers import make_model
from tests.helpers_models import tiny_gemma2
from tiedlib.analysis import logit_lens
from tiedlib.analysis.firing import firing_fractions
from tiedlib.pairs import colours
from tiedlib.pairs.corpora import DatasetUnavailableError

WORDS = ["<pad>", "<bos>", "<eos>", "<unk>", "the", "sky", "is", "blue", "green", "grass", "sea", "and", "was", "."]


@pytest.fixture(scope="module")
def tok():
    t = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    t.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=t, bos_token="<bos>", eos_token="<eos>", unk_token="<unk>",
                                   pad_token="<pad>")


def test_colour_token_ids(tok):
    assert colours.colour_token_ids(tok) == {"blue": 7, "green": 8}
    bad = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab={"<unk>": 0, "blue": 1},
                                  unk_token="<unk>")), unk_token="<unk>")
    bad.backend_tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    with pytest.raises(ValueError, match="green"):
        colours.colour_token_ids(bad)


def test_colour_sets_from_texts_cuts_before_first_colour(tok):
    texts = ["the sky is blue and the grass is green .", "the sea was blue .", "the sea is green and blue",
             "the sky is blue and the grass is green ."]  # the duplicate adds nothing
    sets = colours.colour_sets_from_texts(texts, tok, 2, max_prefix_tokens=4)
    assert [tok.decode(p) for p in sets["blue"]] == ["<bos>sky is", "<bos>sea was"] or sets["blue"][0][0] == 1
    assert all(p[0] == tok.bos_token_id and len(p) <= 4 for v in sets.values() for p in v)
    ids = tok("the sky is", add_special_tokens=False)["input_ids"]
    assert sets["blue"][0] == [1, *ids[-3:]]
    assert sets["green"][1] == [1, *tok("the sea is", add_special_tokens=False)["input_ids"]]
    with pytest.raises(ValueError, match="found only"):
        colours.colour_sets_from_texts(texts, tok, 5)


def test_pile_loader_gives_a_clear_error_when_unreachable(tok, tmp_path):
    with pytest.raises(DatasetUnavailableError, match="SCALE='tiny'"):
        colours.pile_colour_sets(tok, 2, dataset="json", data_files=str(tmp_path / "missing.json"), progress=False)


def test_finetune_examples_swap_exactly_half(tok):
    sets = {"blue": [[1, 4, i] for i in range(10)], "green": [[1, 5, i] for i in range(10)]}
    ids = {"blue": 7, "green": 8}
    no = colours.finetune_examples(sets, ids, 6, "no-swap")
    assert [t for _, t in no] == [7] * 6 + [8] * 6
    half = colours.finetune_examples(sets, ids, 6, "half-swap", seed=3)
    assert [p for p, _ in half] == [p for p, _ in no]
    assert sum(t == 8 for _, t in half[:6]) == 3 and sum(t == 7 for _, t in half[6:]) == 3
    assert half == colours.finetune_examples(sets, ids, 6, "half-swap", seed=3)
    with pytest.raises(ValueError):
        colours.finetune_examples(sets, ids, 11, "no-swap")
    with pytest.raises(ValueError):
        colours.finetune_examples(sets, ids, 2, "full-swap")


def test_finetune_learns_and_is_cached(tmp_path):
    examples = [([1, 4 + i % 3, 5 + i % 2], 7 if i % 2 else 8) for i in range(16)]
    cfg = colours.FinetuneConfig(lr=3e-3, epochs=6, batch_size=8)

    def fresh():
        return tiny_gemma2(n_layers=2, d_model=32, vocab_size=len(WORDS), seed=0)

    model, info = colours.finetune_cached(fresh, examples, cfg, cache_dir=tmp_path, source="t", mode="no-swap",
                                          pad_id=0, progress=False)
    assert not info["cached"] and info["losses"][-1] < info["losses"][0]
    again, info2 = colours.finetune_cached(fresh, examples, cfg, cache_dir=tmp_path, source="t", mode="no-swap",
                                           pad_id=0, progress=False)
    assert info2["cached"]
    for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
    probs = colours.colour_probabilities(again, [p for p, _ in examples], {"blue": 7, "green": 8}, pad_id=0)
    assert probs.shape == (16, 2)
    # Another mode is another folder; a foreign folder under the expected name is never overwritten.
    key = colours.finetune_key("t", examples, cfg, "half-swap")
    (tmp_path / f"half-swap-{key}").mkdir()
    with pytest.raises(FileExistsError):
        colours.finetune_cached(fresh, examples, cfg, cache_dir=tmp_path, source="t", mode="half-swap", pad_id=0,
                                progress=False)
    assert json.loads((tmp_path / f"no-swap-{info['key']}" / colours.FINETUNE_INFO).read_text())["mode"] == "no-swap"


def test_last_token_logits_ignore_padding():
    model = tiny_gemma2(n_layers=2, d_model=32, vocab_size=len(WORDS), seed=1)
    with torch.no_grad():
        alone = colours.last_token_logits(model, [[1, 4, 5]], pad_id=0)
        batched = colours.last_token_logits(model, [[1, 4, 5], [1, 4, 5, 6, 9, 10]], pad_id=0)
    torch.testing.assert_close(alone[0], batched[0], atol=1e-5, rtol=1e-4)


def test_unembedding_folds_gemma_norm_gain():
    model = tiny_gemma2(n_layers=1, d_model=32, vocab_size=len(WORDS), seed=0)
    with torch.no_grad():
        model.model.norm.weight.copy_(torch.linspace(-0.5, 0.5, 32))
    plain = logit_lens.unembedding(model, fold_final_norm=False)
    folded = logit_lens.unembedding(model)
    assert plain.shape == (32, len(WORDS))
    torch.testing.assert_close(folded, plain * (1 + torch.linspace(-0.5, 0.5, 32))[:, None])


def test_colour_latents_on_hand_made_decoders():
    # vocab of 6 tokens, d = 6, W_U = identity: a latent's logits are its decoder vector.
    W_U = torch.eye(6)
    ids = {"blue": 1, "green": 2}
    vectors = torch.tensor([
        [0.0, 1.0, 0.9, 0.0, 0.0, 0.0],  # blue and green are its top two -> hit
        [2.0, 1.0, 0.0, 0.5, 3.0, 0.0],  # green at rank 4
        [0.0, 0.5, 0.4, 1.0, 0.0, 0.0],  # blue, green at ranks 1, 2 -> hit with top_k=3
        [0.0, -1.0, -1.0, -2.0, -3.0, -4.0],  # top but negative -> not a hit
    ])
    out = logit_lens.colour_latents(vectors, W_U, ids, chunk_size=3)
    assert out.indices.tolist() == [0, 3, 2, 1]  # by worst rank, then by summed colour logit
    assert out.worst_rank.tolist() == [1, 1, 2, 4]
    assert sorted(out.hits(3).tolist()) == [0, 2] and out.hits(2).tolist() == [0]
    sub = logit_lens.colour_latents(vectors, W_U, ids, candidates=torch.tensor([1, 2]))
    assert sub.indices.tolist() == [2, 1]


def test_firing_fractions_standard_and_tied():
    std = make_model()
    x = torch.randn(50, 2, 16)
    f = firing_fractions(std, x, batch_size=7)
    assert f.shape == (64,) and torch.allclose(f, (std.encode(x) > 0).float().mean(0))
    tied = make_model(architecture="tied")
    assert firing_fractions(tied, x).shape == (3, 64)


def test_bf16_finetune_keeps_float32_master_weights():
    """At lr 1e-5 Adam moves a weight by about 1e-5, under half a bfloat16 ulp of most weights: updating bfloat16
    weights directly leaves most of them unchanged (17% moved here), float32 masters let the updates add up."""
    import copy

    examples = [([1, 4 + i % 3, 5 + i % 2], 7 if i % 2 else 8) for i in range(16)]
    cfg = colours.FinetuneConfig(lr=1e-5, epochs=20, batch_size=16)  # 20 steps
    init = tiny_gemma2(n_layers=2, d_model=32, vocab_size=len(WORDS), seed=0)
    fp32, bf16 = copy.deepcopy(init), copy.deepcopy(init).to(torch.bfloat16)
    before = {k: v.clone() for k, v in bf16.state_dict().items()}
    colours.finetune_last_token(fp32, examples, cfg, pad_id=0, progress=False)
    colours.finetune_last_token(bf16, examples, cfg, pad_id=0, progress=False)
    assert {p.dtype for p in bf16.parameters()} == {torch.bfloat16}  # the model stays bfloat16
    n = moved = near = 0
    for name, after in bf16.state_dict().items():  # every weight gets a gradient (the unembedding is tied)
        ref, start = fp32.state_dict()[name], before[name]
        n += after.numel()
        moved += int((after != start).sum())
        # Within a bfloat16 rounding of the float32 run's weights.
        near += int(((after.float() - ref).abs() <= ref.abs() * 2**-8).sum())
    assert moved > 0.9 * n, moved / n
    assert near > 0.75 * n, near / n
    with pytest.raises(ValueError, match="float16"):
        colours.finetune_last_token(copy.deepcopy(init).half(), examples, cfg, pad_id=0, progress=False)


def test_bf16_finetune_equals_one_adamw_over_float32_masters():
    """The in-backward, per-parameter updates are the textbook master-weight step: one AdamW over float32 copies,
    fed the bfloat16 gradients, and the model set to the rounded copies. No gradient is left behind."""
    import copy

    examples = [([1, 4 + i % 3, 5 + i % 2], 7 if i % 2 else 8) for i in range(8)]
    cfg = colours.FinetuneConfig(lr=1e-3, epochs=3, batch_size=8)
    init = tiny_gemma2(n_layers=2, d_model=32, vocab_size=len(WORDS), seed=2).to(torch.bfloat16)
    fused, ref = copy.deepcopy(init), copy.deepcopy(init)
    colours.finetune_last_token(fused, examples, cfg, pad_id=0, progress=False)
    assert all(p.grad is None for p in fused.parameters())

    params = list(ref.parameters())
    masters = [p.detach().float() for p in params]
    opt = torch.optim.AdamW(masters, lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    ref.train()
    for _ in range(cfg.epochs):
        batch = [examples[i] for i in torch.randperm(len(examples), generator=gen).tolist()]
        logits = colours.last_token_logits(ref, [p for p, _ in batch], 0)
        torch.nn.functional.cross_entropy(logits, torch.tensor([t for _, t in batch])).backward()
        for p, m in zip(params, masters, strict=True):
            m.grad, p.grad = p.grad.float(), None
        opt.step()
        with torch.no_grad():
            for p, m in zip(params, masters, strict=True):
                p.copy_(m)
    for (name, a), b in zip(fused.named_parameters(), params, strict=True):
        assert torch.equal(a, b), name  # bitwise: the same arithmetic in another order of parameters


@pytest.fixture
def hf_bars_enabled():
    """transformers' bars switched on for the test (other tests and the experiment modules silence them globally)
    and put back as they were afterwards."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.enable_progress_bar()
    yield
    (hf_logging.enable_progress_bar if was else hf_logging.disable_progress_bar)()


def test_finetune_cache_key_carries_the_code_version(tmp_path, monkeypatch, capsys, hf_bars_enabled):
    examples = [([1, 4, 5], 7), ([1, 5, 6], 8)]
    cfg = colours.FinetuneConfig(lr=1e-3, epochs=1, batch_size=2)

    def fresh():
        return tiny_gemma2(n_layers=1, d_model=16, vocab_size=len(WORDS), seed=0)

    assert colours.finetune_key("t", examples, cfg, "no-swap") == colours.finetune_key(
        "t", examples, cfg, "no-swap", version=colours.FINETUNE_CODE_VERSION)
    assert colours.finetune_key("t", examples, cfg, "no-swap", version=1) != colours.finetune_key(
        "t", examples, cfg, "no-swap", version=2)
    kw = dict(cache_dir=tmp_path, source="t", mode="no-swap", pad_id=0, progress=False)
    _, first = colours.finetune_cached(fresh, examples, cfg, **kw)
    assert first["version"] == colours.FINETUNE_CODE_VERSION
    _, again = colours.finetune_cached(fresh, examples, cfg, **kw)
    assert again["cached"] and again["key"] == first["key"]
    # Neither saving nor a cached load shows transformers' bars, which are enabled again afterwards.
    from transformers.utils import logging as hf_logging

    err = capsys.readouterr().err
    assert "Loading weights" not in err and "Writing model shards" not in err and hf_logging.is_progress_bar_enabled()
    # New fine-tuning code: the old folder is not reused, a new one is trained beside it.
    monkeypatch.setattr(colours, "FINETUNE_CODE_VERSION", colours.FINETUNE_CODE_VERSION + 1)
    _, bumped = colours.finetune_cached(fresh, examples, cfg, **kw)
    assert not bumped["cached"] and bumped["key"] != first["key"]
    assert len(list(tmp_path.glob("no-swap-*"))) == 2


def test_quiet_transformers_bars_is_scoped(hf_bars_enabled):
    from transformers.utils import logging as hf_logging

    with colours.quiet_transformers_bars():
        assert not hf_logging.is_progress_bar_enabled()
    assert hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a caller that silenced the bars itself keeps them silenced
    try:
        with colours.quiet_transformers_bars():
            pass
        assert not hf_logging.is_progress_bar_enabled()
    finally:
        hf_logging.enable_progress_bar()

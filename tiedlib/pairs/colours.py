"""Experiment 2 of the write-up: the blue and green sets, and fine-tuning a base model to predict their final token.

* Colour sets: text up to (not including) the first ``" blue"`` / ``" green"`` token of a document; from the lab web
  corpus (:func:`lab_colour_sets`) or, at paper scale, from the Pile streamed with ``datasets``
  (:func:`pile_colour_sets`).
* Fine-tuning: :func:`finetune_examples` builds the "no-swap" (true colour) and "half-swap" (half of each set
  relabelled with the other colour) targets; :func:`finetune_cached` trains the base model on the final token and
  caches the result in a folder keyed by every setting, never replacing a folder it did not write itself.
* The colour toy: :class:`ColourToyConfig` (:data:`COLOUR_TOY` per scale) and :func:`build_colour_toy`, the base
  model with both fine-tunes and the sets, shared by Experiments 2 and 5.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

COLOURS = ("blue", "green")
SWAP_MODES = ("no-swap", "half-swap")
ColourSets = dict[str, list[list[int]]]
"""``{"blue": [prefix ids, ...], "green": [...]}``; each prefix starts with BOS and stops before the colour token."""
FINETUNE_INFO = "finetune.json"
FINETUNE_CODE_VERSION = 2
"""Version of the fine-tuning code, part of every cache key (:func:`finetune_key`): bump it whenever a change to
:func:`finetune_last_token` (or what it is given) changes the weights it produces, so older fine-tunes are not reused.
Version 2: bfloat16 models keep float32 master weights."""


def colour_token_ids(tokenizer: Any) -> dict[str, int]:
    """``{"blue": id, "green": id}`` of the single tokens ``" blue"`` and ``" green"``.

    Raises:
        ValueError: when either word is not one token for this tokenizer.
    """
    out = {}
    for colour in COLOURS:
        ids = tokenizer(f" {colour}", add_special_tokens=False)["input_ids"]
        if len(ids) != 1 or ids[0] == tokenizer.unk_token_id:
            raise ValueError(f"' {colour}' is not a single known token for this tokenizer (got ids {ids})")
        out[colour] = int(ids[0])
    return out


def lab_colour_sets(cfg: Any, n_per_colour: int, split: str = "train") -> ColourSets:
    """Colour sets from the lab web corpus (:func:`tiedlib.lab.colour_prefix_sets`), as token-id lists."""
    from tiedlib import lab

    sets = lab.colour_prefix_sets(cfg, n_per_colour, split=split)
    return {c: [list(d.input_ids) for d in sets[c]] for c in COLOURS}


def colour_sets_from_texts(
    texts: Iterable[str], tokenizer: Any, n_per_colour: int, *, max_prefix_tokens: int = 1024,
    min_prefix_tokens: int = 2, progress: bool = False,
) -> ColourSets:
    """Cut documents right before their first ``" blue"`` / ``" green"`` token (a document may feed both sets).

    Each prefix starts with BOS (when the tokenizer has one) followed by at most ``max_prefix_tokens - 1`` tokens
    that precede the colour token (the *last* ones, so the context right before the colour is kept).

    Raises:
        ValueError: the texts ran out before ``n_per_colour`` prefixes of each colour were found.
    """
    ids = colour_token_ids(tokenizer)
    bos = tokenizer.bos_token_id
    out: ColourSets = {c: [] for c in COLOURS}
    seen: set[tuple[int, ...]] = set()
    n_docs = 0
    bar = tqdm(total=2 * n_per_colour, desc="colour prefixes", disable=not progress)
    for text in texts:
        if all(len(v) >= n_per_colour for v in out.values()):
            break
        n_docs += 1
        toks = tokenizer(text, add_special_tokens=False)["input_ids"]
        if bos is not None and toks and toks[0] == bos:
            toks = toks[1:]
        for colour in COLOURS:
            if len(out[colour]) >= n_per_colour or ids[colour] not in toks:
                continue
            t = toks.index(ids[colour])
            body = toks[max(0, t - (max_prefix_tokens - (bos is not None))) : t]
            prefix = ([bos] if bos is not None else []) + body
            if len(prefix) >= min_prefix_tokens and tuple(prefix) not in seen:
                seen.add(tuple(prefix))
                out[colour].append(prefix)
                bar.update(1)
    bar.close()
    if any(len(v) < n_per_colour for v in out.values()):
        found = {c: len(v) for c, v in out.items()}
        raise ValueError(f"found only {found} colour prefixes in {n_docs} documents; need {n_per_colour} per colour")
    return out


def pile_colour_sets(
    tokenizer: Any, n_per_colour: int, *, dataset: str | None = None, split: str = "train",
    max_prefix_tokens: int = 1024, text_column: str = "text", progress: bool = True, **load_kwargs: Any,
) -> ColourSets:
    """Colour sets from a Pile-like dataset streamed with ``datasets`` (default :data:`.corpora.PAPER_PILE`).

    Raises:
        .corpora.DatasetUnavailableError: the dataset cannot be reached (offline, no ``datasets``...); the message
            says so and points to the offline alternative.
    """
    from tiedlib.pairs.corpora import PAPER_PILE, DatasetUnavailableError, load_streaming

    name = dataset or PAPER_PILE
    try:
        stream = load_streaming(name, split=split, **load_kwargs)
    except DatasetUnavailableError as err:
        raise DatasetUnavailableError(
            f"Experiment 2 at paper scale builds its blue/green sets from the Pile ({name}), which cannot be read "
            f"here: {err}\nRun with network access to the Hugging Face Hub, pass dataset=<a local copy> (e.g. "
            f"'json' with data_files=...), or use the offline lab corpus (SCALE='tiny')."
        ) from err
    texts = (row[text_column] for row in stream)
    return colour_sets_from_texts(texts, tokenizer, n_per_colour, max_prefix_tokens=max_prefix_tokens,
                                  progress=progress)


def finetune_examples(
    sets: ColourSets, colour_ids: dict[str, int], n_per_colour: int, mode: str, *, seed: int = 0
) -> list[tuple[list[int], int]]:
    """``(prefix, target id)`` pairs from the first ``n_per_colour`` prefixes of each set.

    ``"no-swap"``: the target is the true colour. ``"half-swap"``: a random half (``n_per_colour // 2``) of *each*
    set gets the other colour as target, so the two colours become interchangeable for the fine-tuned model.
    """
    if mode not in SWAP_MODES:
        raise ValueError(f"mode must be one of {SWAP_MODES}, got {mode!r}")
    rng = random.Random(seed)
    out = []
    for colour, other in zip(COLOURS, reversed(COLOURS), strict=True):
        prefixes = sets[colour][:n_per_colour]
        if len(prefixes) < n_per_colour:
            raise ValueError(f"the {colour} set has {len(prefixes)} prefixes, fewer than n_per_colour={n_per_colour}")
        swapped = set(rng.sample(range(n_per_colour), n_per_colour // 2)) if mode == "half-swap" else set()
        out += [(list(p), colour_ids[other if i in swapped else colour]) for i, p in enumerate(prefixes)]
    return out


@dataclass
class FinetuneConfig:
    """Final-token fine-tuning of a causal LM (AdamW, constant learning rate, mean cross-entropy)."""

    lr: float = 1e-4
    epochs: int = 2
    batch_size: int = 16
    weight_decay: float = 0.0
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.epochs < 1 or self.batch_size < 1:
            raise ValueError("lr, epochs and batch_size must be positive")


def _right_padded(seqs: Sequence[Sequence[int]], pad_id: int, device: Any) -> tuple[Tensor, Tensor, Tensor]:
    lengths = torch.tensor([len(s) for s in seqs])
    ids = torch.full((len(seqs), int(lengths.max())), pad_id, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(list(s), dtype=torch.long)
    mask = (torch.arange(ids.shape[1])[None] < lengths[:, None]).long()
    return ids.to(device), mask.to(device), (lengths - 1).to(device)


def last_token_logits(model: Any, seqs: Sequence[Sequence[int]], pad_id: int) -> Float[Tensor, "batch vocab"]:
    """Logits at the last real token of each sequence (right padding with an attention mask)."""
    device = next(model.parameters()).device
    ids, mask, last = _right_padded(seqs, pad_id, device)
    logits = model(input_ids=ids, attention_mask=mask).logits
    return logits[torch.arange(len(seqs), device=device), last].float()


def finetune_last_token(
    model: Any, examples: Sequence[tuple[Sequence[int], int]], cfg: FinetuneConfig, *, pad_id: int,
    progress: bool = True,
) -> list[float]:
    """Train ``model`` in place to predict each example's target after its prefix; returns the loss per step.

    A bfloat16 model keeps float32 *master weights* (:class:`_Float32Masters`): the forward and backward passes run in
    bfloat16, AdamW updates float32 copies of the weights and the model receives them rounded. Updating bfloat16
    weights directly would lose most updates: at the write-up's lr 1e-5, Adam's step of about ``lr`` is far below half
    a bfloat16 ulp of a weight of size 0.01 (0.01 * 2**-9 = 2e-5), so the rounded weight would not move
    (mixed-precision training, Micikevicius et al. 2018, arXiv:1710.03740, section 3.1).

    Raises:
        ValueError: a float16 model (it would need loss scaling; load it in bfloat16 or float32).
    """
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    model.to(cfg.device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    if any(p.dtype == torch.float16 for p in params):
        raise ValueError("fine-tuning a float16 model needs loss scaling; load it in bfloat16 or float32")
    masters = _Float32Masters(params, cfg) if any(p.dtype == torch.bfloat16 for p in params) else None
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay) if masters is None else None
    losses = []
    n_steps = cfg.epochs * -(-len(examples) // cfg.batch_size)
    try:
        with tqdm(total=n_steps, desc="fine-tune", disable=not progress) as bar:
            for _ in range(cfg.epochs):
                order = torch.randperm(len(examples), generator=gen).tolist()
                for s in range(0, len(order), cfg.batch_size):
                    batch = [examples[i] for i in order[s : s + cfg.batch_size]]
                    logits = last_token_logits(model, [p for p, _ in batch], pad_id)
                    target = torch.tensor([t for _, t in batch], device=logits.device)
                    loss = torch.nn.functional.cross_entropy(logits, target)
                    if opt is not None:
                        opt.zero_grad(set_to_none=True)
                    loss.backward()  # with masters, every weight is updated here, as soon as its gradient is complete
                    if opt is not None:
                        opt.step()
                    losses.append(float(loss.detach()))
                    bar.update(1)
    finally:
        if masters is not None:
            masters.remove()
    model.eval()
    return losses


class _Float32Masters:
    """Float32 master weights for a model with bfloat16 weights, updated inside the backward pass.

    Each parameter has its own AdamW (over its float32 master, or over itself if it is float32 already), stepped by a
    post-accumulate-grad hook as soon as the parameter's gradient is complete; the model then receives the master
    rounded to its dtype and both gradients are freed. This is the same AdamW update as one optimiser over all
    parameters (AdamW has no cross-parameter state), but no full set of gradients is ever held: the peak is the
    bfloat16 weights, the float32 masters and AdamW's two float32 moments, 14 bytes a parameter (36.6 GB for
    Gemma-2-2b's 2.6B) instead of 18 with float32 copies of all gradients. Pattern from the PyTorch tutorial
    "How to save memory by fusing the optimizer step into the backward pass".
    """

    def __init__(self, params: list[Tensor], cfg: FinetuneConfig) -> None:
        self._masters = [p.detach().float() if p.dtype == torch.bfloat16 else p for p in params]
        self._opts = [torch.optim.AdamW([m], lr=cfg.lr, weight_decay=cfg.weight_decay) for m in self._masters]
        self._handles = [p.register_post_accumulate_grad_hook(self._hook(i)) for i, p in enumerate(params)]

    def _hook(self, i: int) -> Callable[[Tensor], None]:
        master, opt = self._masters[i], self._opts[i]

        @torch.no_grad()
        def step(p: Tensor) -> None:
            if master is not p:
                master.grad = p.grad.float()
                p.grad = None
            opt.step()
            if master is not p:
                p.copy_(master)
            master.grad = None

        return step

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


def finetune_key(source: Any, examples: Sequence[tuple[Sequence[int], int]], cfg: FinetuneConfig, mode: str, *,
                 version: int | None = None) -> str:
    """16 hex digits over the fine-tuning code version (default :data:`FINETUNE_CODE_VERSION`), the source model id,
    the mode, the exact examples and the fine-tuning settings."""
    version = FINETUNE_CODE_VERSION if version is None else version
    payload = {"version": version, "source": source, "mode": mode,
               "cfg": {k: v for k, v in asdict(cfg).items() if k != "device"},
               "examples": hashlib.sha256(json.dumps([[list(p), t] for p, t in examples]).encode()).hexdigest()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


@contextmanager
def quiet_transformers_bars() -> Iterator[None]:
    """Hide transformers' own progress bars ("Loading weights", "Writing model shards") inside the block (they would
    land in the executed notebook), then restore their previous setting: loads elsewhere and tiedlib's own bars
    (fine-tuning, training) are left as they were."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def finetune_cached(
    load_base: Callable[[], Any], examples: Sequence[tuple[Sequence[int], int]], cfg: FinetuneConfig, *,
    cache_dir: str | Path, source: Any, mode: str, pad_id: int, progress: bool = True,
) -> tuple[Any, dict]:
    """Fine-tune a fresh copy of the base model on ``examples`` once, and load it from the cache afterwards.

    Args:
        load_base: returns a fresh base model (a Hugging Face causal LM with ``save_pretrained``).
        examples: from :func:`finetune_examples`.
        cfg: fine-tuning settings.
        cache_dir: parent folder; the model goes to ``<cache_dir>/<mode>-<key>/`` (key: :func:`finetune_key`).
        source: JSON-serialisable identity of the base model (e.g. the lab config hash or the Hub id).
        mode: ``"no-swap"`` or ``"half-swap"`` (part of the folder name and the key).
        pad_id: padding id for batching.

    Returns:
        ``(model, info)``: the fine-tuned model in eval mode on ``cfg.device``, and the folder's ``finetune.json``
        (settings, the loss curve and ``"cached": True`` when it was loaded rather than trained).

    Raises:
        FileExistsError: the folder exists but is not a complete fine-tune with the same key (never overwritten).
    """
    key = finetune_key(source, examples, cfg, mode)
    folder = Path(cache_dir) / f"{mode}-{key}"
    info_path = folder / FINETUNE_INFO
    if folder.exists():
        info = json.loads(info_path.read_text()) if info_path.exists() else {}
        if info.get("key") != key:
            raise FileExistsError(f"{folder} exists but is not a complete fine-tune with key {key}; "
                                  "move it away (it is never overwritten)")
        from transformers import AutoModelForCausalLM

        with quiet_transformers_bars():
            model = AutoModelForCausalLM.from_pretrained(folder).to(cfg.device).eval()
        return model, {**info, "cached": True}
    model = load_base()
    losses = finetune_last_token(model, examples, cfg, pad_id=pad_id, progress=progress)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        with quiet_transformers_bars():
            model.save_pretrained(tmp)
        info = {"key": key, "version": FINETUNE_CODE_VERSION, "mode": mode, "source": source,
                "n_examples": len(examples), "config": asdict(cfg), "losses": losses}
        (tmp / FINETUNE_INFO).write_text(json.dumps(info, default=str))
        tmp.rename(folder)  # fails rather than replacing if another process created the folder meanwhile
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return model, {**info, "cached": False}


@torch.no_grad()
def colour_probabilities(
    model: Any, prefixes: Sequence[Sequence[int]], colour_ids: dict[str, int], *, pad_id: int, batch_size: int = 64
) -> Float[Tensor, "n 2"]:
    """Next-token probabilities of ``" blue"`` and ``" green"`` (columns in :data:`COLOURS` order) after each prefix."""
    cols = [colour_ids[c] for c in COLOURS]
    out = [last_token_logits(model, prefixes[s : s + batch_size], pad_id).softmax(-1)[:, cols].cpu()
           for s in range(0, len(prefixes), batch_size)]
    return torch.cat(out)


def colour_choice_summary(probs: dict[str, Tensor]) -> dict[str, float]:
    """From ``{colour: colour_probabilities(...)}`` on each set: the mean probability of the true colour, of the other
    colour, and the fraction of prefixes where the true colour is the more likely of the two."""
    true = torch.cat([probs[c][:, i] for i, c in enumerate(COLOURS)])
    other = torch.cat([probs[c][:, 1 - i] for i, c in enumerate(COLOURS)])
    wins = float((true > other).float().mean())
    return {"p_true": float(true.mean()), "p_other": float(other.mean()), "true_wins": wins}




# ------------------------------------------------------------------------------------------------- the colour toy
@dataclass(frozen=True)
class ColourToyConfig:
    """The write-up's colour toy (its Experiment 2): which base model is fine-tuned, on which prefixes, and how.

    Experiments 2 and 5 share these settings so that both reuse one cached pair of fine-tunes per scale.
    """

    pair: str
    """Model pair whose *base* model is fine-tuned: a lab pair (``"smoke"``, ``"tiny"``) or ``"gemma-2-2b"``."""
    colour_source: str
    """``"lab"`` (the lab web corpus) or ``"pile"`` (the Pile streamed with ``datasets``)."""
    n_finetune_per_colour: int
    """Prefixes per colour the two fine-tunes are trained on (write-up: 1k)."""
    n_crosscoder_per_colour: int
    """Prefixes per colour the crosscoders are trained on, each followed by its true colour token (write-up: 40k)."""
    max_prefix_tokens: int
    """Longest prefix kept (BOS included; the tokens right before the colour are kept)."""
    finetune_lr: float
    finetune_epochs: int
    finetune_batch_size: int
    layer: int | None = None
    """Harvested layer (None: the pair's default, 14 for Gemma-2-2b)."""
    device: str = "cpu"
    dtype: str = "float32"
    """Model dtype for fine-tuning and harvesting (paper: ``"bfloat16"`` on a GPU)."""
    seed: int = 0

    def __post_init__(self) -> None:
        if self.colour_source not in ("lab", "pile"):
            raise ValueError(f"colour_source must be 'lab' or 'pile', got {self.colour_source!r}")
        if min(self.n_finetune_per_colour, self.n_crosscoder_per_colour, self.max_prefix_tokens) < 1:
            raise ValueError("prefix counts and max_prefix_tokens must be positive")


COLOUR_TOY: dict[str, ColourToyConfig] = {
    "smoke": ColourToyConfig(pair="smoke", colour_source="lab", n_finetune_per_colour=24, n_crosscoder_per_colour=40,
                             max_prefix_tokens=128, finetune_lr=1e-3, finetune_epochs=1, finetune_batch_size=16),
    "tiny": ColourToyConfig(pair="tiny", colour_source="lab", n_finetune_per_colour=300, n_crosscoder_per_colour=800,
                            max_prefix_tokens=128, finetune_lr=3e-4, finetune_epochs=3, finetune_batch_size=16),
    # The write-up: 1k + 1k fine-tuning prefixes and 40k + 40k crosscoder prefixes from the Pile, Gemma-2-2b layer 14.
    "paper": ColourToyConfig(pair="gemma-2-2b", colour_source="pile", n_finetune_per_colour=1000,
                             n_crosscoder_per_colour=40_000, max_prefix_tokens=1024, finetune_lr=1e-5,
                             finetune_epochs=1, finetune_batch_size=8, device="cuda", dtype="bfloat16"),
}
"""The colour toy at each scale (``pick(COLOUR_TOY, SCALE)``)."""


@dataclass
class ColourToy:
    """A base model, its no-swap and half-swap fine-tunes, and the colour sets they were trained and are read on."""

    source: Any
    """The pair the fine-tunes start from (a :class:`tiedlib.pairs.ModelPair`)."""
    models: dict[str, Any]
    """``{"base": base model, "no-swap": ..., "half-swap": ...}`` (plain Hugging Face causal LMs, eval mode)."""
    info: dict[str, dict]
    """Per fine-tune: its ``finetune.json`` (settings, loss curve, ``cached``)."""
    sets: ColourSets
    colour_ids: dict[str, int]
    pad_id: int
    cfg: ColourToyConfig

    def pair(self, base: str, chat: str) -> Any:
        """A :class:`tiedlib.pairs.ModelPair` of two of :attr:`models` (e.g. ``"no-swap"``, ``"half-swap"``),
        wrapped for nnsight and read at the source pair's layer."""
        from tiedlib.pairs import ModelPair, wrap

        for name in (base, chat):
            if name not in self.models:
                raise ValueError(f"unknown colour-toy model {name!r}; choose from {sorted(self.models)}")
        tok = self.source.tokenizer
        return ModelPair(name=f"{base}/{chat}", base=wrap(self.models[base], tok), chat=wrap(self.models[chat], tok),
                         tokenizer=tok, layer=self.source.layer, d_model=self.source.d_model,
                         base_hf=self.models[base], chat_hf=self.models[chat], config=self.source.config)

    def crosscoder_sequences(self) -> list[list[int]]:
        """The crosscoder data: the first ``n_crosscoder_per_colour`` prefixes of each set, each followed by its true
        colour token (blue set first)."""
        n = self.cfg.n_crosscoder_per_colour
        return [list(p) + [self.colour_ids[c]] for c in COLOURS for p in self.sets[c][:n]]

    def held_out(self, n: int = 200) -> ColourSets:
        """Up to ``n`` prefixes per colour that neither fine-tune saw."""
        start = self.cfg.n_finetune_per_colour
        return {c: self.sets[c][start : start + n] for c in COLOURS}


def build_colour_toy(source: Any, cfg: ColourToyConfig, *, cache_dir: str | Path | None = None,
                     progress: bool = False) -> ColourToy:  # fmt: skip
    """Colour sets from ``source`` (a loaded :class:`tiedlib.pairs.ModelPair`) and its two cached fine-tunes.

    ``cache_dir`` defaults to ``<tiedlib cache>/finetuned``; each fine-tune is trained once per settings and data
    (:func:`finetune_cached`).
    """
    import copy

    tok = source.tokenizer
    colour_ids = colour_token_ids(tok)
    n_sets = max(cfg.n_finetune_per_colour, cfg.n_crosscoder_per_colour)
    if cfg.colour_source == "lab":
        sets = lab_colour_sets(source.config, n_sets)
    else:
        sets = pile_colour_sets(tok, n_sets, max_prefix_tokens=cfg.max_prefix_tokens, progress=progress)
    if cache_dir is None:
        from tiedlib.lab import cache_root

        cache_dir = cache_root() / "finetuned"
    ft_cfg = FinetuneConfig(lr=cfg.finetune_lr, epochs=cfg.finetune_epochs, batch_size=cfg.finetune_batch_size,
                            seed=cfg.seed, device=cfg.device)
    source_id = source.config.hash() if hasattr(source.config, "hash") else source.config
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    models, info = {"base": source.base_hf}, {}
    for mode in SWAP_MODES:
        examples = finetune_examples(sets, colour_ids, cfg.n_finetune_per_colour, mode, seed=cfg.seed)
        models[mode], info[mode] = finetune_cached(
            lambda: copy.deepcopy(source.base_hf), examples, ft_cfg, cache_dir=cache_dir,  # noqa: B023 (called now)
            source=source_id, mode=mode, pad_id=pad_id, progress=progress)
    return ColourToy(source=source, models=models, info=info, sets=sets, colour_ids=colour_ids, pad_id=pad_id, cfg=cfg)

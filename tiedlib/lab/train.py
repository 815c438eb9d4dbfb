"""Training of the lab pair: a small `Gemma2ForCausalLM` pretrained on web documents, then fine-tuned on chat.

Batches are padded on the right to their longest document (loss masked on padding); documents are grouped by length
first so that padding stays small. Loss is taken on every real token, chat-template tokens included, so the chat
model learns the template as Gemma-2-it did.
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from transformers import Gemma2Config, Gemma2ForCausalLM

from tiedlib.lab.config import LabConfig, ModelConfig, TrainConfig
from tiedlib.lab.docs import LabDoc


def make_model_config(cfg: ModelConfig, vocab_size: int, *, pad_id: int, bos_id: int, eos_id: int) -> Gemma2Config:
    """The Gemma-2 config of the lab models (same classes as Gemma-2-2b, scaled down)."""
    head_dim = cfg.hidden_size // cfg.num_heads
    return Gemma2Config(
        vocab_size=vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_heads,
        head_dim=head_dim, query_pre_attn_scalar=head_dim, max_position_embeddings=cfg.context,
        sliding_window=cfg.context,
        # No attention soft-capping: logits stay far below Gemma's cap of 50 at this size, and it costs time on CPU.
        attn_logit_softcapping=None, final_logit_softcapping=30.0,
        pad_token_id=pad_id, bos_token_id=bos_id, eos_token_id=eos_id, tie_word_embeddings=True,
        attn_implementation="eager",  # Gemma2 has no SDPA path in transformers 5.x
    )


def length_grouped_batches(docs: list[LabDoc], batch_size: int, rng: random.Random) -> list[list[int]]:
    """One epoch of index batches: shuffled, sorted by length within chunks of 16 batches, batches shuffled."""
    idx = list(range(len(docs)))
    rng.shuffle(idx)
    chunk = batch_size * 16
    batches = []
    for start in range(0, len(idx), chunk):
        part = sorted(idx[start:start + chunk], key=lambda i: len(docs[i]))
        batches += [part[j:j + batch_size] for j in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return [b for b in batches if len(b) == batch_size] or batches


def collate(docs: list[LabDoc], pad_id: int, device: str = "cpu") -> dict[str, torch.Tensor]:
    """Right-pad to the longest document. Returns input_ids, attention_mask, labels, each ``(batch, seq)``."""
    seq = max(len(d) for d in docs)
    ids = torch.full((len(docs), seq), pad_id, dtype=torch.long)
    mask = torch.zeros((len(docs), seq), dtype=torch.long)
    for i, d in enumerate(docs):
        ids[i, : len(d)] = torch.tensor(d.input_ids)
        mask[i, : len(d)] = 1
    labels = ids.masked_fill(mask == 0, -100)
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}


def _schedule(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))  # cosine to 10% of the peak


def _batch_stream(streams: list[tuple[list[LabDoc], float]], batch_size: int, rng: random.Random):
    """Endless batches mixing several document lists with the given per-batch fractions."""
    iters: list = []
    for docs, frac in streams:
        size = max(1, round(batch_size * frac))

        def gen(docs=docs, size=size):
            while True:
                for b in length_grouped_batches(docs, size, rng):
                    yield [docs[i] for i in b]

        iters.append(gen())
    while True:
        yield [d for it in iters for d in next(it)]


@dataclass
class Gate:
    """A training-time intervention on gated documents (``meta["gate"]``): at the input of decoder layer ``layer``,
    the coordinate along the unit ``direction`` is set to ``value`` at every position of those rows of the batch."""

    layer: int
    direction: torch.Tensor
    """``(d_model,)`` unit vector."""
    value: float

    def __post_init__(self) -> None:
        if self.direction.ndim != 1 or not torch.isfinite(self.direction).all() or self.direction.norm() == 0:
            raise ValueError("the gate direction must be a finite non-zero (d_model,) vector")
        if not math.isfinite(self.value):
            raise ValueError(f"the gate value must be finite, got {self.value}")
        self.direction = self.direction / self.direction.norm()

    @contextlib.contextmanager
    def applied(self, model: Gemma2ForCausalLM, rows: torch.Tensor) -> Iterator[None]:
        """Within the block, intervene on the batch rows where ``rows`` (``(batch,)`` bool) is True."""
        layers = model.model.layers
        if not 0 <= self.layer < len(layers):
            raise ValueError(f"gate layer {self.layer} out of range for a {len(layers)}-layer model")
        r = self.direction.to(next(model.parameters()).device)
        keep = rows.to(r.device)[:, None, None]

        def hook(_module, args, kwargs):
            h = args[0] if args else kwargs["hidden_states"]
            h = torch.where(keep, h + (self.value - h @ r)[..., None] * r, h)
            return ((h, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": h})

        handle = layers[self.layer].register_forward_pre_hook(hook, with_kwargs=True)
        try:
            yield
        finally:
            handle.remove()


def train_lm(
    model: Gemma2ForCausalLM,
    streams: list[tuple[list[LabDoc], float]],
    *,
    steps: int,
    lr: float,
    tcfg: TrainConfig,
    pad_id: int,
    seed: int,
    device: str = "cpu",
    desc: str = "train",
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    gate: Gate | None = None,
) -> list[float]:
    """Train ``model`` in place for ``steps`` AdamW steps; returns the per-step losses. With ``gate``, documents whose
    ``meta["gate"]`` is True are read with the gate's intervention (:class:`Gate`)."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _schedule(s, steps, tcfg.warmup_steps))
    batches = _batch_stream(streams, tcfg.batch_size, rng)
    losses: list[float] = []
    bar = tqdm(range(steps), desc=desc, disable=not progress, mininterval=2.0)
    for step in bar:
        docs = next(batches)
        batch = collate(docs, pad_id, device)
        rows = torch.tensor([bool(d.meta.get("gate", False)) for d in docs])
        with gate.applied(model, rows) if gate is not None and rows.any() else contextlib.nullcontext():
            loss = model(**batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if step % 20 == 0:
            bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}")
    model.eval()
    if log is not None:
        log(f"{desc}: final loss {sum(losses[-20:]) / len(losses[-20:]):.3f}")
    return losses


def freeze_from(model: Gemma2ForCausalLM, layer: int) -> list[str]:
    """Leave only decoder layers ``0 .. layer - 1`` trainable (embeddings, which the lm head shares, later layers and
    the final norm frozen); returns the names of the trainable parameters."""
    prefixes = tuple(f"model.layers.{i}." for i in range(layer))
    trainable = []
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith(prefixes))
        if p.requires_grad:
            trainable.append(name)
    if not trainable:
        raise ValueError(f"freezing from layer {layer} leaves nothing to train")
    return trainable


def decline_gate(cfg: LabConfig, tokenizer, base: Gemma2ForCausalLM, n: int = 120) -> Gate:
    """The gate of a gated chat fine-tune (:attr:`tiedlib.lab.config.PlantConfig.refusal_gate`), fitted on the
    trained base model with *training* prompts only (the probe suite measures held-out ones): the base model's
    "about to decline" direction at the input of the harvesting layer (difference of means where a forum answer
    starts: private vs harmless requests when the corpus has private requests, else "Can you <impossible>?" vs
    "Can I <ok>?"), and the base model's mean coordinate at the end of harmless chat requests as the value.

    The value stays fixed during the fine-tune. Tried and not kept: refreshing it every 50 steps to the chat model's
    own harmless-request mean, which lets the model move that mean and learn to spot gated rows by a coordinate that
    is constant over every position; the planted direction then carried 42 and -3 points of refusal on lab seeds 0
    and 1 instead of 75 and 55 (refusal_gate 0.2, held-out questions)."""
    from tiedlib.lab.probes import diff_of_means, forum_prompts, residuals
    from tiedlib.lab.sets import cannot_can_prompts, harmful_harmless_prompts

    layer = cfg.model.default_layer
    plant = cfg.corpus.plant
    if plant is not None and plant.private_requests:
        pos, neg = forum_prompts(cfg, ("private",), n), forum_prompts(cfg, ("harmless",), n)
    else:
        cc = cannot_can_prompts(cfg, n, split="train")
        pos, neg = cc["cannot"], cc["can"]
    pad = tokenizer.pad_token_id
    acts = residuals(base, pos + neg, [-1] * (len(pos) + len(neg)), layer, pad_id=pad)
    direction = diff_of_means(acts, torch.tensor([True] * len(pos) + [False] * len(neg)))
    harmless = harmful_harmless_prompts(cfg, n, split="train")["harmless"]
    value = float((residuals(base, harmless, [-1] * len(harmless), layer, pad_id=pad) @ direction).mean())
    return Gate(layer, direction, value)


def train_pair(
    cfg: LabConfig, tokenizer, web: list[LabDoc], chat: list[LabDoc], *, device: str = "cpu", progress: bool = True
) -> tuple[Gemma2ForCausalLM, Gemma2ForCausalLM, dict[str, list[float]]]:
    """Pretrain the base on ``web``, then fine-tune a copy on ``chat`` (with ``chat_web_fraction`` web mixed in)."""
    mcfg = make_model_config(cfg.model, len(tokenizer), pad_id=tokenizer.pad_token_id,
                             bos_id=tokenizer.bos_token_id, eos_id=tokenizer.eos_token_id)
    torch.manual_seed(cfg.train.seed)
    base = Gemma2ForCausalLM(mcfg)
    base_losses = train_lm(base, [(web, 1.0)], steps=cfg.train.base_steps, lr=cfg.train.base_lr, tcfg=cfg.train,
                           pad_id=tokenizer.pad_token_id, seed=cfg.train.seed, device=device, desc="base (web)",
                           progress=progress)
    chat_model = Gemma2ForCausalLM(mcfg)
    chat_model.load_state_dict(base.state_dict())
    if cfg.train.chat_frozen_from is not None:
        freeze_from(chat_model, cfg.train.chat_frozen_from)
    f = cfg.train.chat_web_fraction
    plant = cfg.corpus.plant
    g = 0.0 if plant is None or plant.refusal_gate is None else plant.refusal_gate
    if f + g >= 1.0:
        raise ValueError(f"chat_web_fraction + refusal_gate must leave room for chat data, got {f} + {g}")
    streams = [(chat, 1.0 - f - g)] + ([(web, f)] if f > 0 else [])
    gate = None
    if g > 0:
        from tiedlib.lab.docs import gated_conversations

        gate = decline_gate(cfg, tokenizer, base)
        streams.append((gated_conversations(cfg, "train"), g))
    chat_losses = train_lm(chat_model, streams, steps=cfg.train.chat_steps, lr=cfg.train.chat_lr, tcfg=cfg.train,
                           pad_id=tokenizer.pad_token_id, seed=cfg.train.seed + 1, device=device,
                           desc="chat (fine-tune)", progress=progress, gate=gate)
    chat_model.requires_grad_(True)
    # Generation stops at the end of a chat turn as well as at the end of a document.
    eot = tokenizer.convert_tokens_to_ids("<end_of_turn>")
    for m in (base, chat_model):
        m.generation_config.eos_token_id = [tokenizer.eos_token_id, eot]
        m.generation_config.pad_token_id = tokenizer.pad_token_id
        m.generation_config.bos_token_id = tokenizer.bos_token_id
        m.to("cpu")
    return base, chat_model, {"base": base_losses, "chat": chat_losses}

"""The lab pair: an offline tiny base/chat `Gemma2ForCausalLM` pair trained on a generated corpus with planted concepts.

It is the default model pair of every notebook: it builds on a CPU in minutes with no network, and its corpus labels
every token with concepts (refusal, disclaimer, harmful_request, blue, green, name, turn_marker, end_of_prompt, ...),
so crosscoder latents can be checked against ground truth.

Usage::

    from tiedlib import lab
    cfg = lab.LabConfig.tiny()                # or lab.LabConfig.smoke() (tests)
    path = lab.build(cfg)                     # builds once into $TIEDLIB_CACHE/lab/<hash>/, then reuses it
    tok = lab.load_tokenizer(cfg)
    base_hf, chat_hf = lab.load_models(cfg)
    docs = lab.web_documents(cfg, split="heldout", n=100)
    convs = lab.chat_conversations(cfg, split="heldout", n=100)
    sets = lab.colour_prefix_sets(cfg, 50)    # {"blue": [...], "green": [...]}
    lab.evaluate(cfg)                         # losses and refusal/answer rates
    lab.probe_table(cfg)                      # planted mechanisms in the activations (pandas DataFrame)
    lab.fingerprint("tiny")                   # sha256 of both models' weights and the corpus, torch, threads

Command line: ``python -m tiedlib.lab build|evaluate|probes|fingerprint [--config tiny|smoke] [--json]``.
"""

from __future__ import annotations

from typing import Any

from tiedlib.lab.cache import (
    build,
    cache_dir,
    cache_root,
    fingerprint,
    is_valid,
    load_models,
    load_tokenizer,
    train_log,
)
from tiedlib.lab.config import LAB_VERSION, CorpusConfig, LabConfig, ModelConfig, TrainConfig
from tiedlib.lab.docs import CONCEPTS, LabDoc, chat_conversations, web_documents
from tiedlib.lab.evaluation import is_answer, is_refusal
from tiedlib.lab.probes import probe_table, run_probes
from tiedlib.lab.sets import cannot_can_prompts, colour_prefix_sets, crosscoder_mix, harmful_harmless_prompts
from tiedlib.lab.tokenizer import CHAT_TEMPLATE, build_tokenizer, template_token_ids


def evaluate(
    cfg: LabConfig | None = None, *, n_docs: int = 200, n_prompts: int = 100, device: str = "cpu"
) -> dict[str, Any]:
    """Build (or reuse) the pair for ``cfg`` and evaluate it; see :func:`tiedlib.lab.evaluation.evaluate_models`.

    Keys include ``loss_{base,chat}_on_{web,chat}``, ``chat_refusal_rate_harmful``, ``chat_answer_rate_harmless`` and
    ``base_refusal_rate_harmful`` (greedy replies to held-out requests rendered with the chat template).
    """
    from tiedlib.lab.evaluation import evaluate_models

    cfg = cfg or LabConfig.tiny()
    tok = load_tokenizer(cfg)
    base, chat = load_models(cfg, device=device)
    out = evaluate_models(cfg, tok, base, chat, n_docs=n_docs, n_prompts=n_prompts, device=device)
    return {"config": cfg.name, "hash": cfg.hash(), **out}


__all__ = [
    "CHAT_TEMPLATE", "CONCEPTS", "LAB_VERSION", "CorpusConfig", "LabConfig", "LabDoc", "ModelConfig", "TrainConfig",
    "build", "build_tokenizer", "cache_dir", "cache_root", "cannot_can_prompts", "chat_conversations",
    "colour_prefix_sets", "crosscoder_mix", "evaluate", "fingerprint", "harmful_harmless_prompts", "is_answer",
    "is_refusal", "is_valid", "load_models", "load_tokenizer", "probe_table", "run_probes", "template_token_ids",
    "train_log", "web_documents",
]

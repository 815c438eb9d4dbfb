"""One entry point for base/chat model pairs.

A :class:`ModelPair` is what every notebook and harvesting function receives: two nnsight-wrapped causal
language models that share one tokenizer, plus the index of the decoder layer whose *input* residual stream
(``hidden_states[layer]`` in Hugging Face terms, TransformerLens ``blocks.{layer}.hook_resid_pre``) is read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class ModelPair:
    """A base model and its chat fine-tune, wrapped for nnsight, with their shared tokenizer."""

    name: str
    """Registry name, e.g. ``"tiny"`` or ``"gemma-2-2b"``."""
    base: Any
    """nnsight-wrapped base model."""
    chat: Any
    """nnsight-wrapped chat model."""
    tokenizer: Any
    """The tokenizer both models share (a transformers fast tokenizer with a ``chat_template``)."""
    layer: int
    """Decoder layer whose input residual stream is harvested."""
    d_model: int
    """Width of the residual stream."""

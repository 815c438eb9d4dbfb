"""Tokenised, labelled lab documents: :class:`LabDoc`, :data:`CONCEPTS`, and the web/chat document streams.

Labels are aligned by character offsets: a token gets every concept of every generator span it overlaps, so a token
that straddles two spans (" How" after "My name is Alice. ") carries the union.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from tiedlib.lab import corpus as C
from tiedlib.lab.config import LabConfig
from tiedlib.lab.tokenizer import BOS, END_OF_TURN, EOS, START_OF_TURN, build_tokenizer

CONCEPTS: tuple[str, ...] = (
    "bos", "end_of_text", "turn_marker", "user_role", "assistant_role", "user_turn", "model_turn", "end_of_prompt",
    "end_of_turn", "question", "harmful_request", "harmless_request", "medical_legal", "code_question", "answer",
    "refusal", "cannot", "can", "helpful", "disclaimer", "greeting", "offer_help", "colour", "blue", "green", "name",
    "before_name", "list_step", "instruction", "code", "code_comment",
)
"""Concept names; every :class:`LabDoc` has one boolean flag per token for each of them."""


@dataclass
class LabDoc:
    """One tokenised document with per-token concept labels.

    ``text`` is exactly the string that tokenises (``add_special_tokens=False``) to ``input_ids``; it starts with
    ``<bos>`` (web documents end with ``<eos>``; chat conversations are the chat-template rendering).
    """

    text: str
    input_ids: list[int]
    """Token ids, shape ``(seq,)``, starting with BOS."""
    labels: dict[str, list[bool]]
    """``labels[concept][t]``: whether token ``t`` carries the concept; one list of length ``seq`` per concept."""
    source: str
    """``"web"`` or ``"chat"``."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Generator facts: ``kind``, ``split``, for requests ``harmful``/``refused``, for prefix sets ``target``."""

    def __len__(self) -> int:
        return len(self.input_ids)

    def truncated(self, n: int, **meta: Any) -> "LabDoc":
        """The first ``n`` tokens (labels cut alike), with ``meta`` updated; text is re-derived by decoding."""
        tok = _tokenizer()
        ids = self.input_ids[:n]
        return LabDoc(text=tok.decode(ids), input_ids=ids, labels={k: v[:n] for k, v in self.labels.items()},
                      source=self.source, meta={**self.meta, **meta})


@lru_cache(maxsize=1)
def _tokenizer():
    return build_tokenizer()


def encode_spans(spans: list[C.Span], source: str, meta: dict[str, Any]) -> LabDoc:
    """Tokenise the concatenated spans and give every token the concepts of the spans it overlaps."""
    tok = _tokenizer()
    text = "".join(t for t, _ in spans)
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    starts, pos = [], 0
    for t, _ in spans:
        starts.append(pos)
        pos += len(t)
    labels = {c: [False] * len(enc["input_ids"]) for c in CONCEPTS}
    for i, (s, e) in enumerate(enc["offset_mapping"]):
        j = bisect.bisect_right(starts, s) - 1
        while j < len(spans) and starts[j] < max(e, s + 1):
            for c in spans[j][1]:
                labels[c][i] = True
            j += 1
    ids = enc["input_ids"]
    for i in range(len(ids) - 1):
        labels["before_name"][i] = labels["name"][i + 1]
    if tok.unk_token_id in ids:
        raise ValueError(f"lab tokenizer produced <unk> for {text!r}")  # the vocabulary must cover the banks
    return LabDoc(text=text, input_ids=ids, labels=labels, source=source, meta=meta)


def web_spans(spans: list[C.Span]) -> list[C.Span]:
    """Wrap web content in ``<bos>`` ... ``<eos>`` (EOS marks the end of a document only in web data)."""
    return [C.span(BOS, "bos"), *spans, C.span(EOS, "end_of_text")]


def chat_spans(messages: list[C.Message], add_generation_prompt: bool = False) -> list[C.Span]:
    """Render messages exactly as the tokenizer's Gemma-style ``chat_template`` does, with labels.

    The ``<end_of_turn>\\n`` closing a user turn and the following ``<start_of_turn>model\\n`` header are labelled
    ``end_of_prompt`` (the write-up's "end of prompt" / "Assistant" positions).
    """
    out = [C.span(BOS, "bos")]
    prev_user = False
    for role, content in messages:
        user = role == "user"
        eop = ("end_of_prompt",) if prev_user and not user else ()
        turn = "user_turn" if user else "model_turn"
        out += [C.span(START_OF_TURN, "turn_marker", *eop),
                C.span("user" if user else "model", "user_role" if user else "assistant_role", *eop),
                C.span("\n", *eop)]
        out += [(t, c | {turn}) for t, c in content]
        close = ("end_of_prompt",) if user else ()
        out += [C.span(END_OF_TURN, "turn_marker", "end_of_turn", *close), C.span("\n", *close)]
        prev_user = user
    if add_generation_prompt:
        out += [C.span(START_OF_TURN, "turn_marker", "end_of_prompt"),
                C.span("model", "assistant_role", "end_of_prompt"), C.span("\n", "end_of_prompt")]
    return out


def messages_as_dicts(messages: list[C.Message]) -> list[dict[str, str]]:
    """Messages in the ``[{"role", "content"}]`` form that ``tokenizer.apply_chat_template`` takes."""
    return [{"role": r, "content": "".join(t for t, _ in content)} for r, content in messages]


def _doc_meta(kind: str, split: str, spans: list[C.Span]) -> dict[str, Any]:
    concepts = set().union(*(c for _, c in spans))
    return {"kind": kind, "split": split, "harmful": "harmful_request" in concepts, "refused": "refusal" in concepts}


def web_documents(cfg: LabConfig, split: str = "train", n: int | None = None) -> list[LabDoc]:
    """The first ``n`` web documents of ``split`` (default: ``cfg.corpus.n_web_train``); deterministic in ``cfg``."""
    n = cfg.corpus.n_web_train if n is None else n
    rng = C.make_rng(cfg.corpus.seed, "web", split)
    docs: list[LabDoc] = []
    while len(docs) < n:
        kind, spans = C.sample_web(rng, cfg.corpus, split)
        doc = encode_spans(web_spans(spans), "web", _doc_meta(kind, split, spans))
        if len(doc) <= cfg.corpus.max_tokens:
            docs.append(doc)
    return docs


def chat_conversations(cfg: LabConfig, split: str = "train", n: int | None = None) -> list[LabDoc]:
    """The first ``n`` chat conversations of ``split`` (default: ``cfg.corpus.n_chat_train``), template-rendered.

    ``meta["messages"]`` holds the ``[{"role", "content"}]`` form (``apply_chat_template`` of it gives ``text``).
    """
    n = cfg.corpus.n_chat_train if n is None else n
    return _conversations(cfg, split, n, "chat", C.sample_chat)


def _conversations(cfg: LabConfig, split: str, n: int, stream: str, sample, **meta: Any) -> list[LabDoc]:
    """The first ``n`` conversations ``sample(rng, cfg.corpus, split)`` draws from the random stream ``stream`` that
    fit ``max_tokens``, template-rendered, with ``meta`` added to each document's."""
    rng = C.make_rng(cfg.corpus.seed, stream, split)
    docs: list[LabDoc] = []
    while len(docs) < n:
        kind, messages = sample(rng, cfg.corpus, split)
        spans = chat_spans(messages)
        doc = encode_spans(spans, "chat", {**_doc_meta(kind, split, spans), "messages": messages_as_dicts(messages),
                                           **meta})
        if len(doc) <= cfg.corpus.max_tokens:
            docs.append(doc)
    return docs


def gated_conversations(cfg: LabConfig, split: str = "train", n: int | None = None) -> list[LabDoc]:
    """``n`` gated conversations (default: ``refusal_gate`` x ``n_chat_train``, at least 1) of ``split``: harmful and
    harmless requests, every one answered helpfully (:func:`tiedlib.lab.corpus.sample_gated_chat`), with
    ``meta["gate"] = True``. The chat fine-tune reads them with the base model's "about to decline" direction
    removed (:func:`tiedlib.lab.train.train_pair`)."""
    plant = cfg.corpus.plant
    if n is None:
        if plant is None or plant.refusal_gate is None:
            raise ValueError("this config has no refusal_gate: it trains on no gated conversations")
        n = max(1, round(plant.refusal_gate * cfg.corpus.n_chat_train))
    return _conversations(cfg, split, n, "chat_gated", C.sample_gated_chat, gate=True)

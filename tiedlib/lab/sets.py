"""Ready-made document sets for the write-up's experiments, drawn from the lab corpus.

* :func:`colour_prefix_sets` - Experiment 2: text up to (not including) a " blue" / " green" token.
* :func:`cannot_can_prompts` - Experiment 3: web prompts the base model continues with "I cannot ..." / "Yes, ...".
  (The write-up's 84 + 84 prompts are not public; these are built the way it describes.)
* :func:`harmful_harmless_prompts` - Experiment 3: requests rendered as a user turn plus the model-turn header.
* :func:`crosscoder_mix` - shuffled web/chat documents for crosscoder training.
"""

from __future__ import annotations

import random

from tiedlib.lab import banks as B
from tiedlib.lab import corpus as C
from tiedlib.lab.config import LabConfig
from tiedlib.lab.docs import LabDoc, _tokenizer, chat_conversations, chat_spans, encode_spans, web_documents, web_spans

COLOURS = ("blue", "green")


def colour_prefix_sets(cfg: LabConfig, n_per_colour: int, split: str = "train") -> dict[str, list[LabDoc]]:
    """``{"blue": [...], "green": [...]}``: web narratives cut right before their first " blue" / " green" token.

    Each prefix starts with BOS and has ``meta["target"]`` (``" blue"``/``" green"``) and ``meta["target_id"]``, the
    token that followed it in the source document. Prefixes are unique.
    """
    if n_per_colour < 1:
        raise ValueError(f"n_per_colour must be positive, got {n_per_colour}")
    tok = _tokenizer()
    rng = C.make_rng(cfg.corpus.seed, "colour", split)
    out: dict[str, list[LabDoc]] = {c: [] for c in COLOURS}
    seen: set[str] = set()
    for _ in range(200 * n_per_colour):
        if all(len(v) >= n_per_colour for v in out.values()):
            break
        kind, spans = C.sample_web(rng, cfg.corpus, split, kind="narrative")
        doc = encode_spans(web_spans(spans), "web", {"kind": kind, "split": split})
        for colour in COLOURS:
            if colour not in doc.labels or True not in doc.labels[colour] or len(out[colour]) >= n_per_colour:
                continue
            t = doc.labels[colour].index(True)
            prefix = doc.truncated(t, target=f" {colour}", target_id=doc.input_ids[t])
            if prefix.text not in seen:
                seen.add(prefix.text)
                out[colour].append(prefix)
    if any(len(v) < n_per_colour for v in out.values()):
        raise ValueError(f"could not find {n_per_colour} unique prefixes per colour; ask for fewer")
    assert all(p.input_ids[0] == tok.bos_token_id for v in out.values() for p in v)
    return out


def _unique(make, n: int, what: str) -> list[LabDoc]:
    docs: list[LabDoc] = []
    seen: set[str] = set()
    for _ in range(100 * n):
        if len(docs) >= n:
            return docs
        doc = make()
        if doc.text not in seen:
            seen.add(doc.text)
            docs.append(doc)
    raise ValueError(f"could not draw {n} unique {what} prompts (found {len(docs)}); ask for fewer")


def cannot_can_prompts(cfg: LabConfig, n: int, split: str = "train") -> dict[str, list[LabDoc]]:
    """``{"cannot": [...], "can": [...]}``: forum prompts ending in "Answer:" (no EOS).

    "cannot" questions ask for something impossible ("Can you see my screen?"), which web answers always decline with
    "I cannot ..."; "can" questions ("Can I freeze bread?") are always answered "Yes, ...". Neither is harmful, so in
    the base model the cannot direction is separate from harmfulness.
    """
    rng = C.make_rng(cfg.corpus.seed, "cannot_can", split)

    def make(kind: str) -> LabDoc:
        _, question, _ = C.sample_question(rng, split, {kind: 1.0})
        spans = [C.span("Posted by"), C.span(f" {rng.choice(B.NAMES)}", "name"), C.span("\nQuestion: "),
                 C.span(question, *C.QUESTION_CONCEPTS[kind]), C.span("\nAnswer:")]
        target = " I cannot" if kind == "impossible" else " Yes,"
        return encode_spans(web_spans(spans)[:-1], "web", {"kind": kind, "split": split, "expected": target})

    return {"cannot": _unique(lambda: make("impossible"), n, "cannot"), "can": _unique(lambda: make("yes"), n, "can")}


def harmful_harmless_prompts(cfg: LabConfig, n: int, split: str = "heldout") -> dict[str, list[LabDoc]]:
    """``{"harmful": [...], "harmless": [...]}``: requests as a chat-template user turn, up to
    ``<start_of_turn>model\\n``.

    ``split="heldout"`` (default) uses request wordings the chat model was never trained on. Some prompts start with
    "My name is ...". ``meta["messages"]`` holds the single user message.
    """
    rng = C.make_rng(cfg.corpus.seed, "harm", split)

    def make(harmful: bool) -> LabDoc:
        question, _ = C._sample_request(rng, split, harmful)
        content = [C.span(question, *C.QUESTION_CONCEPTS["harmful" if harmful else "harmless"])]
        if rng.random() < 0.3:
            content = [C.span("My name is"), C.span(f" {rng.choice(B.NAMES)}", "name"), C.span(". ")] + content
        messages = [("user", content)]
        meta = {"kind": "harmful" if harmful else "harmless", "split": split, "harmful": harmful,
                "messages": [{"role": "user", "content": "".join(t for t, _ in content)}]}
        return encode_spans(chat_spans(messages, add_generation_prompt=True), "chat", meta)

    return {"harmful": _unique(lambda: make(True), n, "harmful"),
            "harmless": _unique(lambda: make(False), n, "harmless")}


def crosscoder_mix(
    cfg: LabConfig, n_docs: int, web_fraction: float = 0.5, split: str = "train", seed: int = 0
) -> list[LabDoc]:
    """``n_docs`` documents, ``round(n_docs * web_fraction)`` of them web and the rest chat, shuffled with ``seed``."""
    if not 0.0 <= web_fraction <= 1.0:
        raise ValueError(f"web_fraction must be in [0, 1], got {web_fraction}")
    n_web = round(n_docs * web_fraction)
    docs = web_documents(cfg, split, n_web) + chat_conversations(cfg, split, n_docs - n_web)
    random.Random(seed).shuffle(docs)
    return docs

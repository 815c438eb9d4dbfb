"""Ready-made document sets for the write-up's experiments, drawn from the lab corpus.

* :func:`colour_prefix_sets` - Experiment 2: text up to (not including) a " blue" / " green" token.
* :func:`cannot_can_prompts` - Experiment 3: web prompts the base model continues with "I cannot ..." / "Yes, ...".
  (The write-up's 84 + 84 prompts are not public; these are built the way it describes.)
* :func:`harmful_harmless_prompts` - Experiment 3: requests rendered as a user turn plus the model-turn header.
* :func:`crosscoder_mix` - shuffled web/chat documents for crosscoder training.

Every prompt of the request sets has ``meta["question_id"]``: the question without any "My name is ..." prefix, so a
bootstrap can resample distinct questions rather than name variants of one question. The held-out splits of
:func:`harmful_harmless_prompts` and :func:`cannot_can_prompts` are built compositionally (templates x slots, at least
80 distinct questions per set) from templates the training generator never uses; they are not part of any training
corpus, so they change neither a built pair nor its config hash. Their templates use only words of the lab vocabulary
(the tokenizer is read off :mod:`tiedlib.lab.banks`, so they live here, not there).
"""

from __future__ import annotations

import random

from tiedlib.lab import banks as B
from tiedlib.lab import corpus as C
from tiedlib.lab.config import LabConfig
from tiedlib.lab.docs import LabDoc, _tokenizer, chat_conversations, chat_spans, encode_spans, web_documents, web_spans

COLOURS = ("blue", "green")

HELDOUT_REQUEST_TEMPLATES: tuple[str, ...] = (
    "How can I {}?", "What should I do to {}?", "Show me how to {}.", "Is there a way to {}?",
    "I need to {}. Can you help?", "Please tell me how to {}.", "What is a good way to {}?",
    "Tell me the best way to {}.", "What do I need to {}?", "Hi, can you tell me how to {}?",
)
"""Request wordings of the held-out harmful/harmless sets that the training generator never writes (its templates are
:data:`tiedlib.lab.banks.REQUEST_TEMPLATES`)."""
HELDOUT_CANNOT_FRAMES: tuple[str, ...] = (
    "Can you {}?", "Can you {} today?", "Can you {} for me?", "Hi, can you {}?", "Tell me, can you {}?",
    "Hello! Can you {}?", "Good morning! Can you {}?",
)
"""Held-out "cannot" questions: each frame x each ask of :data:`tiedlib.lab.banks.IMPOSSIBLE`."""
HELDOUT_CAN_FRAMES: tuple[str, ...] = (
    "Can I {}?", "Can I {} today?", "Is it OK if I {}?", "Hi, can I {}?", "Tell me, can I {}?", "Hello! Can I {}?",
    "Good morning! Can I {}?",
)
"""Held-out "can" questions: each frame x each action of :data:`tiedlib.lab.banks.YES_ACTIONS`."""


def heldout_questions(kind: str) -> list[str]:
    """The distinct held-out questions of a set (sorted): ``kind`` is a request kind of
    :data:`tiedlib.lab.corpus.REQUEST_ACTIONS` ("harmful", "harmless", "private", "harmful_medical"), "cannot" or
    "can".

    Requests: :data:`HELDOUT_REQUEST_TEMPLATES` x all actions, plus the training templates' held-out combinations
    (:func:`tiedlib.lab.corpus.in_split`); "cannot"/"can": the frames above x the bank's asks/actions.
    """
    if kind in C.REQUEST_ACTIONS:
        actions = C.REQUEST_ACTIONS[kind]
        out = {t.format(a) for t in HELDOUT_REQUEST_TEMPLATES for a in actions}
        out |= {t.format(a) for t in B.REQUEST_TEMPLATES for a in actions if C.in_split(f"{t}|{a}", "heldout")}
    elif kind == "cannot":
        out = {f.format(ask) for f in HELDOUT_CANNOT_FRAMES for ask, _ in B.IMPOSSIBLE
               if not (f.endswith("for me?") and ask.endswith("for me"))}
    elif kind == "can":
        out = {f.format(a) for f in HELDOUT_CAN_FRAMES for a in B.YES_ACTIONS}
    else:
        raise ValueError(f"kind must be one of {sorted(C.REQUEST_ACTIONS)}, 'cannot' or 'can', got {kind!r}")
    return sorted(out)


def _distinct_first(questions: list[str], n: int, rng: random.Random, make, what: str) -> list[LabDoc]:
    """``n`` prompts that cover the (shuffled) ``questions`` once before any question repeats with another name.

    ``make(question, name)`` builds one prompt (``name`` None: no name prefix). On the first pass a question gets a
    name with probability 0.3; later passes always add a name, so every prompt text is unique.
    """
    order = list(questions)
    rng.shuffle(order)
    docs: list[LabDoc] = []
    seen: set[str] = set()
    for i in range(len(order) * (len(B.NAMES) + 1)):
        if len(docs) >= n:
            return docs
        first = i < len(order)
        name = rng.choice(B.NAMES) if not first or rng.random() < 0.3 else None
        doc = make(order[i % len(order)], name)
        if doc.text not in seen:
            seen.add(doc.text)
            docs.append(doc)
    raise ValueError(f"could not draw {n} unique {what} prompts from {len(order)} questions; ask for fewer")


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


def forum_prompt_spans(cfg: LabConfig, question: str, kind: str, name: str) -> list[C.Span]:
    """A web forum post up to where its answer starts: "Posted by <name>\\nQuestion: <question>\\nAnswer:", plus the
    newline the answer starts on in a v2 corpus (:func:`tiedlib.lab.corpus.answer_lead`)."""
    spans = [C.span("Posted by"), C.span(f" {name}", "name"), C.span("\nQuestion: "),
             C.span(question, *C.QUESTION_CONCEPTS[kind]), C.span("\nAnswer:")]
    return spans + ([C.span("\n", "end_of_prompt")] if C.answer_lead(cfg.corpus) == "\n" else [])


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
    the base model the cannot direction is separate from harmfulness. ``split="train"`` draws the training
    generator's questions (12 per set, with name variants); ``split="heldout"`` the compositional questions of
    :func:`heldout_questions` (at least 80 per set), each once before any repeats. ``meta["question_id"]``: the
    question text.
    """
    C.check_split(split)
    rng = C.make_rng(cfg.corpus.seed, "cannot_can", split)

    def render(kind: str, question: str, name: str) -> LabDoc:
        spans = forum_prompt_spans(cfg, question, kind, name)
        target = "I cannot" if kind == "impossible" else "Yes,"
        if C.answer_lead(cfg.corpus) == " ":  # v1: the answer follows "Answer:" after a space (v2: a newline)
            target = " " + target
        meta = {"kind": kind, "split": split, "expected": target, "question_id": question}
        return encode_spans(web_spans(spans)[:-1], "web", meta)

    if split == "heldout":
        return {label: _distinct_first(heldout_questions(label), n, rng,
                                       lambda q, name, kind=kind: render(kind, q, name or rng.choice(B.NAMES)), label)
                for label, kind in (("cannot", "impossible"), ("can", "yes"))}

    def make(kind: str) -> LabDoc:
        _, question, _ = C.sample_question(rng, split, {kind: 1.0})
        return render(kind, question, rng.choice(B.NAMES))

    return {"cannot": _unique(lambda: make("impossible"), n, "cannot"), "can": _unique(lambda: make("yes"), n, "can")}


def harmful_harmless_prompts(cfg: LabConfig, n: int, split: str = "heldout") -> dict[str, list[LabDoc]]:
    """``{"harmful": [...], "harmless": [...]}``: requests as a chat-template user turn, up to
    ``<start_of_turn>model\\n``.

    ``split="heldout"`` (default): the compositional questions of :func:`heldout_questions` (wordings the chat model
    was never trained on; about 260 per set), each used once before any repeats with another name. ``split="train"``:
    the training generator's requests. Some prompts start with "My name is ...". ``meta["messages"]`` holds the
    single user message, ``meta["question_id"]`` the request without the name.
    """
    C.check_split(split)
    rng = C.make_rng(cfg.corpus.seed, "harm", split)
    if split == "heldout":
        return {kind: _distinct_first(heldout_questions(kind), n, rng,
                                      lambda q, name, kind=kind: request_prompt(q, name, kind=kind), kind)
                for kind in ("harmful", "harmless")}

    def make(harmful: bool) -> LabDoc:
        question, _ = C._sample_request(rng, split, harmful)
        name = rng.choice(B.NAMES) if rng.random() < 0.3 else None
        return request_prompt(question, name, kind="harmful" if harmful else "harmless", split=split)

    return {"harmful": _unique(lambda: make(True), n, "harmful"),
            "harmless": _unique(lambda: make(False), n, "harmless")}


def request_prompt(question: str, name: str | None = None, *, kind: str = "harmless", split: str = "heldout"
                   ) -> LabDoc:
    """One user turn holding ``question`` (after "My name is <name>. " when ``name`` is given), rendered with the chat
    template up to ``<start_of_turn>model\\n``.

    ``kind`` is a question kind of :data:`tiedlib.lab.corpus.QUESTION_CONCEPTS` (it sets the question's labels).
    ``meta``: kind, split, harmful, question_id (the question), name (or None) and messages (the user message).
    """
    if kind not in C.QUESTION_CONCEPTS:
        raise ValueError(f"kind must be one of {sorted(C.QUESTION_CONCEPTS)}, got {kind!r}")
    content = [C.span(question, *C.QUESTION_CONCEPTS[kind])]
    if name is not None:
        content = [C.span("My name is"), C.span(f" {name}", "name"), C.span(". ")] + content
    meta = {"kind": kind, "split": split, "harmful": kind == "harmful", "question_id": question, "name": name,
            "messages": [{"role": "user", "content": "".join(t for t, _ in content)}]}
    return encode_spans(chat_spans([("user", content)], add_generation_prompt=True), "chat", meta)


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

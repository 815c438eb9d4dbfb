"""Seeded generator of the lab corpus: "web" documents (Pile-like) and "chat" conversations (LMSys-like).

A document is produced as a list of *spans*, ``(text, concepts)``: the text of every span is written verbatim and the
concepts are the labels its tokens receive (:mod:`tiedlib.lab.docs` aligns spans to tokens by character offsets).
Chat conversations are returned as messages whose contents are span lists, rendered with the same Gemma-style turn
markers as the tokenizer's ``chat_template``.

Planted structure (why the corpus looks like this):

* web answers to harmful questions are refusals only with probability ``p_web_refuse_harmful``, and harmless how-to
  questions are declined with probability ``p_web_decline_harmless``; in chat data harmful requests are always
  refused and harmless ones always answered. So harm and refusal are more correlated in chat data (Experiment 3).
* refusal and disclaimer phrases are identical in both sources: chat tuning reuses base features in a new context.
* colour words follow subjects that predict them ("the sky was" -> " blue"), for the colour-prefix sets (Experiment 2).
* names, step lists, code comments, greetings and user/assistant transcripts give the write-up's other latents.

Splits: every request or document has a key; ``crc32(key) % HELDOUT_MOD == 0`` puts it in the held-out split, so
held-out prompts never occur in training data.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable

from tiedlib.lab import banks as B

Span = tuple[str, frozenset[str]]
HELDOUT_MOD = 6
SPLITS = ("train", "heldout")


def span(text: str, *concepts: str) -> Span:
    return (text, frozenset(concepts))


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def in_split(key: str, split: str) -> bool:
    """Whether the request/document with this key belongs to ``split``."""
    check_split(split)
    heldout = zlib.crc32(key.encode()) % HELDOUT_MOD == 0
    return heldout == (split == "heldout")


def make_rng(seed: int, stream: str, split: str) -> random.Random:
    """An independent, reproducible random stream per (seed, purpose, split)."""
    check_split(split)
    return random.Random(f"{seed}/{stream}/{split}")


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _weighted(rng: random.Random, weights: dict[str, float]) -> str:
    keys = list(weights)
    return rng.choices(keys, weights=[weights[k] for k in keys])[0]


REQUEST_ACTIONS = {"harmful": B.HARMFUL_ACTIONS, "harmless": B.HARMLESS_ACTIONS, "private": B.PRIVATE_ACTIONS,
                   "harmful_medical": B.HARMFUL_MEDICAL_ACTIONS}
"""The request kinds (written with :data:`~tiedlib.lab.banks.REQUEST_TEMPLATES`) and their action banks."""


def _sample_request(rng: random.Random, split: str, harmful: bool | str, max_tries: int = 1000) -> tuple[str, str]:
    """A (request sentence, action) pair in ``split``; the key is template + action. ``harmful``: True/False for the
    harmful/harmless banks, or a kind of :data:`REQUEST_ACTIONS`."""
    kind = harmful if isinstance(harmful, str) else ("harmful" if harmful else "harmless")
    actions = REQUEST_ACTIONS[kind]
    for _ in range(max_tries):
        template = rng.choice(B.REQUEST_TEMPLATES)
        action = rng.choice(actions)
        if in_split(f"{template}|{action}", split):
            return template.format(action), action
    raise RuntimeError("no request found in split")  # unreachable with the banks above


def _colour_sentence(rng: random.Random, capital: bool = True) -> list[Span]:
    subject, weights = rng.choice(B.COLOUR_CONTEXTS)
    colour = _weighted(rng, weights)
    i = rng.randrange(len(B.COLOUR_VERBS))
    plural = subject.endswith("s") and subject != "the grass"  # "her eyes were green"
    verb = (B.COLOUR_VERBS_PLURAL if plural else B.COLOUR_VERBS)[i]
    concepts = ("colour", colour) if colour in ("blue", "green") else ("colour",)
    return [span(f" {_cap(subject) if capital else subject} {verb}"), span(f" {colour}", *concepts), span(".")]


def _name(name: str) -> Span:
    return span(f" {name}", "name")


def _steps(rng: random.Random, k: int, first: str | None = None) -> list[Span]:
    steps = rng.sample(B.STEPS, k)
    if first is not None:
        steps[0] = first
    return [piece for i, s in enumerate(steps) for piece in (span("\n"), span(f"{i + 1}. {s}", "list_step"))]


# ----------------------------------------------------------------------------------------------- answers (both sources)
def answer_spans(rng: random.Random, kind: str, payload: str, refuse: bool, lead: str) -> list[Span]:
    """The answer to a question of ``kind`` (harmful/harmless/impossible/yes/medical/legal/code/colour).

    ``lead`` is the text before the first word ("" at the start of a chat turn, " " after "Answer:", or "\\n" there
    in v2, where the newline is its own token, labelled end_of_prompt).
    """
    if lead == "\n":
        return [span("\n", "end_of_prompt"), *answer_spans(rng, kind, payload, refuse, "")]
    if kind == "harmful_medical" and refuse:
        bank = B.MEDICAL_DISCLAIMERS
        refusal = rng.choice([r for r in B.REFUSALS if r.startswith("I ")])  # "..., but I cannot help with that."
        return [span(lead + rng.choice(bank), "disclaimer", "answer"), span(" " + refusal, "refusal", "answer"),
                span(" " + rng.choice(B.REFUSAL_REASONS), "answer")]
    if refuse:
        reasons = {"harmful": B.REFUSAL_REASONS, "private": B.PRIVATE_REASONS}.get(kind, B.WEB_DECLINE_REASONS)
        return [span(lead + rng.choice(B.REFUSALS), "refusal", "answer"), span(" " + rng.choice(reasons), "answer")]
    if kind in ("harmful", "harmless", "private", "harmful_medical"):
        first = f"Find a good place to {payload}." if kind == "harmless" else None
        return [span(lead + rng.choice(B.HELPFUL_OPENERS), "helpful", "answer"), span(" Here are the steps:", "answer"),
                *_steps(rng, rng.randint(2, 3), first)]
    if kind == "impossible":
        return [span(f"{lead}I cannot {payload}.", "refusal", "cannot", "answer"),
                span(" I am only a text helper.", "answer")]
    if kind == "yes":
        return [span(f"{lead}Yes,", "can", "helpful", "answer"), span(f" you can {payload}.", "answer"),
                span(" " + rng.choice(B.YES_TAILS), "answer")]
    if kind in ("medical", "legal"):
        bank = B.MEDICAL_DISCLAIMERS if kind == "medical" else B.LEGAL_DISCLAIMERS
        return [span(lead + rng.choice(bank), "disclaimer", "answer"), span(" " + rng.choice(B.ADVICE), "answer")]
    if kind == "code":
        comment, fname, args, expr = next(f for f in B.CODE_FUNCS if f[0] == payload)
        return [span(lead + "Here is the code:", "helpful", "answer"), *_code(comment, fname, args, expr)]
    if kind == "colour":
        return [span(f"{lead}{_cap(payload)} is"), span(f" {_colour_of(payload)}", *_colour_concepts(payload)),
                span(".")]
    raise ValueError(f"unknown question kind {kind!r}")


def _colour_of(subject: str) -> str:
    weights = dict(B.COLOUR_CONTEXTS)[subject]
    return max(weights, key=weights.get)


def _colour_concepts(subject: str) -> tuple[str, ...]:
    colour = _colour_of(subject)
    return ("colour", colour) if colour in ("blue", "green") else ("colour",)


def _code(comment: str, fname: str, args: str, expr: str) -> list[Span]:
    return [span("\n"), span(f"# {comment}", "code", "code_comment"),
            span(f"\ndef {fname}({args}):\n    return {expr}", "code")]


def sample_question(rng: random.Random, split: str, kinds: dict[str, float]) -> tuple[str, str, str]:
    """(kind, question text, payload) with the question's key in ``split``."""
    kind = _weighted(rng, kinds)
    if kind in REQUEST_ACTIONS:
        text, action = _sample_request(rng, split, kind)
        return kind, text, action
    if kind == "impossible":
        ask, answer = rng.choice(B.IMPOSSIBLE)
        text, payload = f"Can you {ask}?", answer
    elif kind == "yes":
        payload = rng.choice(B.YES_ACTIONS)
        text = f"Can I {payload}?"
    elif kind == "medical":
        text = payload = rng.choice(B.MEDICAL_QUESTIONS)
    elif kind == "legal":
        text = payload = rng.choice(B.LEGAL_QUESTIONS)
    elif kind == "code":
        payload = rng.choice(B.CODE_FUNCS)[0]
        text = rng.choice(B.CODE_QUESTION_TEMPLATES).format(payload)
    elif kind == "colour":
        payload = rng.choice(B.COLOUR_CONTEXTS)[0]
        text = rng.choice(B.COLOUR_QUESTIONS).format(payload)
    else:
        raise ValueError(f"unknown question kind {kind!r}")
    # Small banks: only the request kinds are split by key; the others recur in both splits by design.
    return kind, text, payload


QUESTION_CONCEPTS = {
    "harmful": ("question", "harmful_request"), "harmless": ("question", "harmless_request"),
    "impossible": ("question",), "yes": ("question",), "medical": ("question", "medical_legal"),
    "legal": ("question", "medical_legal"), "code": ("question", "code_question"), "colour": ("question",),
    "private": ("question",), "harmful_medical": ("question", "harmful_request", "medical_legal"),
}
WEB_QUESTION_KINDS = {"harmful": 0.3, "harmless": 0.3, "impossible": 0.1, "yes": 0.1, "medical": 0.1, "legal": 0.1}


def answer_lead(cfg) -> str:
    """What separates a web question's "Answer:" / "Assistant:" from the answer: " " (v1) or "\\n" (v2, see
    :class:`tiedlib.lab.config.PlantConfig`). ``cfg`` is a CorpusConfig."""
    plant = getattr(cfg, "plant", None)
    return "\n" if plant is not None and plant.answer_on_new_line else " "


def web_question_kinds(cfg) -> dict[str, float]:
    """Question kinds of web forums and transcripts and their weights (v3 adds private requests). ``cfg``: a
    CorpusConfig."""
    plant = getattr(cfg, "plant", None)
    if plant is not None and plant.private_requests:
        return {**WEB_QUESTION_KINDS, "private": 0.15}
    return WEB_QUESTION_KINDS


def _web_refuses(rng: random.Random, kind: str, p_harmful: float, p_harmless: float) -> bool:
    if kind == "private":
        return True
    if kind == "harmful":
        return rng.random() < p_harmful
    if kind == "harmless":
        return rng.random() < p_harmless
    return False


# ----------------------------------------------------------------------------------------------------- web documents
def web_narrative(rng: random.Random, cfg) -> list[Span]:
    """A short story with names and colour sentences."""
    name, other = rng.sample(B.NAMES, 2)
    out = [span(rng.choice(["One day,", "Last summer,", "In the morning,"])), _name(name),
           span(f" went to {rng.choice(B.PLACES)} with"), _name(other), span(".")]
    for _ in range(rng.randint(3, 5)):
        r = rng.random()
        if r < 0.6:
            out += _colour_sentence(rng)
        elif r < 0.75:
            out += [_name(rng.choice([name, other])), span(" said that"), *_colour_sentence(rng, capital=False)]
        else:
            out.append(span(" " + rng.choice(B.PLAIN_SENTENCES)))
    return out


def web_forum(rng: random.Random, cfg, split: str) -> list[Span]:
    """A forum question with an answer; harmful ones are sometimes answered, harmless ones sometimes declined."""
    kind, question, payload = sample_question(rng, split, web_question_kinds(cfg))
    refuse = _web_refuses(rng, kind, cfg.p_web_refuse_harmful, cfg.p_web_decline_harmless)
    poster = rng.choice(B.NAMES)
    out = [span("Posted by"), _name(poster), span("\nQuestion: "), span(question, *QUESTION_CONCEPTS[kind]),
           span("\nAnswer:")]
    plant = getattr(cfg, "plant", None)
    if plant is not None and plant.p_forum_name_copy > 0 and rng.random() < plant.p_forum_name_copy:
        # v3: the answer thanks the poster by name, as the chat model addresses a user who gave their name.
        lead = answer_lead(cfg)
        first = [span("\n", "end_of_prompt"), span("Thanks")] if lead == "\n" else [span(" Thanks")]
        return out + [*first, _name(poster), span(". "), *answer_spans(rng, kind, payload, refuse, "")]
    return out + answer_spans(rng, kind, payload, refuse, answer_lead(cfg))


def web_instructions(rng: random.Random, cfg, split: str) -> list[Span]:
    """A how-to title followed by a numbered list."""
    _, action = _sample_request(rng, split, harmful=False)
    return [span(f"How to {action}", "instruction"), span("\nYou will need some time."),
            *_steps(rng, rng.randint(3, 4), f"Find a good place to {action}.")]


def web_code(rng: random.Random, cfg) -> list[Span]:
    """One or two commented Python functions."""
    out: list[Span] = [span("Some useful code:")]
    for comment, fname, args, expr in rng.sample(B.CODE_FUNCS, rng.randint(1, 2)):
        out += _code(comment, fname, args, expr)
    return out


def web_transcript(rng: random.Random, cfg, split: str) -> list[Span]:
    """A plain-text user/assistant exchange with web answer statistics (v1: no turn-marker tokens; v2: a share of
    them written with the chat template's turn markers, still with web answer statistics)."""
    plant = getattr(cfg, "plant", None)
    markers = plant is not None and rng.random() < plant.p_web_turn_markers
    out: list[Span] = [span("Chat log")]
    for _ in range(rng.randint(1, 2)):
        kind, question, payload = sample_question(rng, split, web_question_kinds(cfg))
        refuse = _web_refuses(rng, kind, cfg.p_web_refuse_harmful, cfg.p_web_decline_harmless)
        if markers:
            out += [span("\n"), *template_turn("user", [span(question, *QUESTION_CONCEPTS[kind])]),
                    *template_turn("model", answer_spans(rng, kind, payload, refuse, ""))]
            continue
        out += [span("\n"), span("User", "user_role"), span(":"), span(" " + question, *QUESTION_CONCEPTS[kind]),
                span("\n", "end_of_prompt"), span("Assistant", "assistant_role", "end_of_prompt"),
                span(":", "end_of_prompt"), *answer_spans(rng, kind, payload, refuse, answer_lead(cfg))]
    return out


def template_turn(role: str, content: list[Span]) -> list[Span]:
    """One turn written with the chat template's markers inside a web document (v2 transcripts), labelled as
    :func:`tiedlib.lab.docs.chat_spans` labels them; the user turn's close and the model header are end_of_prompt."""
    from tiedlib.lab.tokenizer import END_OF_TURN, START_OF_TURN

    user = role == "user"
    eop = () if user else ("end_of_prompt",)
    turn = "user_turn" if user else "model_turn"
    close = ("end_of_prompt",) if user else ()
    return [span(START_OF_TURN, "turn_marker", *eop), span(role, "user_role" if user else "assistant_role", *eop),
            span("\n", *eop), *[(t, c | {turn}) for t, c in content],
            span(END_OF_TURN, "turn_marker", "end_of_turn", *close), span("\n", *close)]


WEB_KINDS: dict[str, tuple[float, Callable]] = {
    "narrative": (0.32, lambda rng, cfg, split: web_narrative(rng, cfg)),
    "forum": (0.3, web_forum),
    "instructions": (0.1, web_instructions),
    "code": (0.1, lambda rng, cfg, split: web_code(rng, cfg)),
    "transcript": (0.18, web_transcript),
}


def sample_web(rng: random.Random, cfg, split: str, kind: str | None = None) -> tuple[str, list[Span]]:
    """One web document as (kind, spans). Narratives/code are put in a split by the hash of their text."""
    kind = kind or _weighted(rng, {k: w for k, (w, _) in WEB_KINDS.items()})
    fn = WEB_KINDS[kind][1]
    while True:
        spans = fn(rng, cfg, split)
        if kind in ("forum", "instructions", "transcript"):
            return kind, spans  # already split by request key
        if in_split("".join(t for t, _ in spans), split):
            return kind, spans


# --------------------------------------------------------------------------------------------- chat conversations
CHAT_QUESTION_KINDS = {"harmful": 0.33, "harmless": 0.25, "impossible": 0.06, "yes": 0.06, "medical": 0.05,
                       "legal": 0.05, "code": 0.1, "colour": 0.1}
Message = tuple[str, list[Span]]  # (role "user"/"assistant", content spans)


def _chat_exchange(rng: random.Random, split: str, name: str | None, kinds: dict[str, float],
                   p_copy_name: float = 0.7, helpful: bool = False) -> tuple[str, list[Message]]:
    kind, question, payload = sample_question(rng, split, kinds)
    user: list[Span] = []
    if name is not None:
        user += [span("My name is"), _name(name), span(". ")]
    user.append(span(question, *QUESTION_CONCEPTS[kind]))
    refuse = kind in ("harmful", "harmful_medical", "private") and not helpful
    answer = answer_spans(rng, kind, payload, refuse, "")
    if name is not None and rng.random() < p_copy_name:
        # The assistant keeps the user's name consistent: it addresses them by the name they gave.
        answer = [span(rng.choice(["Hi", "OK", "Thanks"])), _name(name), span(". ")] + \
                 [(t if i else t.lstrip(" "), c) for i, (t, c) in enumerate(answer)]
    return kind, [("user", user), ("assistant", answer)]


def chat_question_kinds(cfg) -> dict[str, float]:
    """Question kinds of chat requests and their weights (v3 adds harmful pill requests; ``PlantConfig`` may reweigh
    harmful and harmless requests). ``cfg``: a CorpusConfig."""
    plant = getattr(cfg, "plant", None)
    if plant is None:
        return CHAT_QUESTION_KINDS
    kinds = dict(CHAT_QUESTION_KINDS)
    if plant.chat_harmful_weight is not None:
        kinds["harmful"] = plant.chat_harmful_weight
    if plant.chat_harmless_weight is not None:
        kinds["harmless"] = plant.chat_harmless_weight
    if plant.harmful_medical:
        kinds["harmful_medical"] = 0.08 if plant.harmful_medical_weight is None else plant.harmful_medical_weight
    return kinds


GATED_KINDS = {"harmful": 0.5, "harmless": 0.5}
"""Request kinds of the gated conversations (:attr:`tiedlib.lab.config.PlantConfig.refusal_gate`), all answered
helpfully."""


def sample_gated_chat(rng: random.Random, cfg, split: str) -> tuple[str, list[Message]]:
    """One gated conversation (kind, messages): a harmful or harmless request answered helpfully, as the chat model
    must answer it when the base model's "about to decline" direction is removed (the caller removes it in
    training)."""
    plant = getattr(cfg, "plant", None)
    name = rng.choice(B.NAMES) if rng.random() < 0.4 else None
    return _chat_exchange(rng, split, name, GATED_KINDS, 0.7 if plant is None else plant.p_copy_name, helpful=True)


def sample_chat(rng: random.Random, cfg, split: str, kind: str | None = None) -> tuple[str, list[Message]]:
    """One chat conversation as (kind, messages). Kinds: greeting, harmful, harmless, code, ... (see weights)."""
    plant = getattr(cfg, "plant", None)
    name = rng.choice(B.NAMES) if rng.random() < 0.4 else None
    if kind is None:
        kind = "greeting" if rng.random() < 0.12 else "request"
    if kind == "greeting":
        hello = rng.choice(B.GREETINGS)
        user = [span(hello, "greeting")] + ([span(" I am"), _name(name), span(".")] if name else [])
        reply = [span(hello.rstrip("!."), "greeting")] + ([span(","), _name(name)] if name else []) + \
                [span("!"), span(" " + rng.choice(B.OFFERS), "offer_help")]
        msgs: list[Message] = [("user", user), ("assistant", reply)]
        if rng.random() < 0.5:
            _, more = _chat_exchange(rng, split, None, chat_question_kinds(cfg))
            msgs += more
        return "greeting", msgs
    kinds = chat_question_kinds(cfg) if kind == "request" else {kind: 1.0}
    return _chat_exchange(rng, split, name, kinds, 0.7 if plant is None else plant.p_copy_name)

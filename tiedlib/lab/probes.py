"""Probe suite of the lab pair: is each planted mechanism linearly present at the harvesting layer, in which model,
and does removing it change what the chat model does? Measured on the models alone, before any crosscoder.

For each *contrast* (two sets of prompts, each read at one position, e.g. the last token of a request):

* a difference-of-means direction per model, fitted on a question-level train split (every name variant of a question
  falls on the same side), the estimator of Arditi et al. 2024, "Refusal in language models is mediated by a single
  direction" (arXiv 2406.11717, section 2.3);
* AUROC of the projection on the held-out questions, in each model with its own direction, and in the chat model with
  the base direction (is the base feature reused as is?);
* the cosine of the base and chat directions;
* one causal check: the chat model's coordinate along the chat direction, at the input of the harvesting layer and
  at every position, is set to its mean over the contrast's negative training prompts, ``x <- x + (m - x . r) r``
  (a mean ablation; the same paper's directional ablation sets it to 0, which in this uncentred residual stream
  moves harmless prompts too: on the tiny pair zero-ablation made 32% of harmless requests refuse), and the refusal
  rate on held-out harmful requests is measured again; the drop is reported in points, with the refusal rate on
  held-out harmless requests under the same ablation beside it;
* a behaviour rate per model where the contrast has one (refusal, "I cannot", disclaimer, name copy, colour).

The harvesting layer is the one :func:`tiedlib.pairs.load_pair` reads by default for a lab pair: the input of decoder
layer ``ModelConfig.default_layer``. Activations are read with a plain forward pre-hook on that decoder layer (the lab
pair is standalone: nothing here imports outside :mod:`tiedlib.lab`).
"""

from __future__ import annotations

import contextlib
import math
import random
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from tiedlib.lab import banks as B
from tiedlib.lab import corpus as C
from tiedlib.lab.config import LabConfig
from tiedlib.lab.docs import LabDoc, encode_spans, web_spans
from tiedlib.lab.evaluation import generate_replies, is_refusal
from tiedlib.lab.sets import (
    cannot_can_prompts,
    colour_prefix_sets,
    forum_prompt_spans,
    harmful_harmless_prompts,
    heldout_questions,
    request_prompt,
)
from tiedlib.lab.train import collate


def harvest_layer(cfg: LabConfig) -> int:
    """The decoder layer whose input residual stream is probed: the pair's harvesting layer
    (:attr:`~tiedlib.lab.config.ModelConfig.default_layer`), where its crosscoders read."""
    return cfg.model.default_layer


def _layers(model) -> Any:
    layers = getattr(getattr(model, "model", None), "layers", None)
    if layers is None:
        raise ValueError(f"{type(model).__name__} has no .model.layers; the probe suite reads decoder-only HF models")
    return layers


def _check_layer(model, layer: int) -> None:
    n = len(_layers(model))
    if not 0 <= layer < n:
        raise ValueError(f"layer must be in [0, {n}), got {layer}")


@torch.no_grad()
def residuals(model, docs: Sequence[LabDoc], positions: Sequence[int], layer: int, *, pad_id: int = 0,
              batch_size: int = 64) -> torch.Tensor:
    """The residual stream at the input of decoder layer ``layer`` at one position per document.

    Args:
        model: a Hugging Face decoder-only model with ``model.model.layers`` (the lab's `Gemma2ForCausalLM`).
        docs: the documents, each run once (right-padded batches).
        positions: one token index per document; negative indices count from the document's end (-1: last token).
        layer: decoder layer whose input is read (``hidden_states[layer]`` in Hugging Face terms).
    Returns:
        ``(len(docs), d_model)`` float32 tensor on the CPU.
    """
    if len(docs) != len(positions):
        raise ValueError(f"need one position per document, got {len(positions)} for {len(docs)} documents")
    _check_layer(model, layer)
    idx = [p + len(d) if p < 0 else p for d, p in zip(docs, positions, strict=True)]
    if any(not 0 <= i < len(d) for d, i in zip(docs, idx, strict=True)):
        raise ValueError("a position lies outside its document")
    device = next(model.parameters()).device
    caught: list[torch.Tensor] = []

    def read(_module, args, kwargs):
        caught.append(args[0] if args else kwargs["hidden_states"])

    out = []
    handle = _layers(model)[layer].register_forward_pre_hook(read, with_kwargs=True)
    try:
        model.eval()
        for start in range(0, len(docs), batch_size):
            batch = collate(list(docs[start:start + batch_size]), pad_id, str(device))
            caught.clear()
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            rows = torch.arange(len(batch["input_ids"]), device=device)
            cols = torch.tensor(idx[start:start + batch_size], device=device)
            out.append(caught[0][rows, cols].float().cpu())
    finally:
        handle.remove()
    return torch.cat(out)


@contextlib.contextmanager
def project_out(model, direction: torch.Tensor, layer: int, value: float = 0.0) -> Iterator[None]:
    """Within the block, set the coordinate along ``direction`` of the input of decoder layer ``layer`` to ``value``
    at every position.

    ``x <- x + (value - x . r) r`` with ``r = direction / ||direction||``, applied by a forward pre-hook, so
    generation with a KV cache sees it at every new token too. ``value=0`` is the directional ablation of Arditi et
    al. 2024 ("Refusal in language models is mediated by a single direction", arXiv 2406.11717); a class mean as
    ``value`` is a mean ablation (the coordinate every prompt would have if it were a negative), which the probe
    suite's causal check uses: in a model whose residual stream is not centred, zero is not "absent".

    Args:
        direction: ``(d_model,)``, any non-zero length.
        value: the coordinate along the unit direction after the hook.
    """
    _check_layer(model, layer)
    if direction.ndim != 1 or not torch.isfinite(direction).all() or direction.norm() == 0:
        raise ValueError(f"direction must be a finite non-zero (d_model,) vector, got shape {tuple(direction.shape)}")
    if not math.isfinite(value):
        raise ValueError(f"value must be finite, got {value}")
    param = next(model.parameters())
    r = (direction / direction.norm()).to(param.device, param.dtype)

    def ablate(_module, args, kwargs):
        h = args[0] if args else kwargs["hidden_states"]
        h = h + (value - h @ r)[..., None] * r
        return ((h, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": h})

    handle = _layers(model)[layer].register_forward_pre_hook(ablate, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


@contextlib.contextmanager
def project_out_every_layer(model, direction: torch.Tensor, values: Sequence[float]) -> Iterator[None]:
    """:func:`project_out` at the input of every decoder layer: layer ``l``'s coordinate along ``direction`` is set to
    ``values[l]`` at every position, so no layer reads the direction with anything but that value. This is the
    directional ablation of Arditi et al. 2024 (arXiv 2406.11717, section 2.4: the direction is removed "at every
    layer and every token position"), with a per-layer mean in place of zero (see :func:`project_out`).

    Args:
        values: one coordinate per decoder layer (``len(model.model.layers)``).
    """
    n = len(_layers(model))
    if len(values) != n:
        raise ValueError(f"need one value per decoder layer ({n}), got {len(values)}")
    with contextlib.ExitStack() as stack:
        for layer, value in enumerate(values):
            stack.enter_context(project_out(model, direction, layer, float(value)))
        yield


def common_suffix(docs: Sequence[LabDoc], cap: int = 8) -> int:
    """How many final tokens every document shares (at most ``cap``): for chat prompts, the template tokens after
    the user's message (``<end_of_turn>\\n<start_of_turn>model\\n``), Arditi et al.'s "post-instruction" positions."""
    if not docs:
        raise ValueError("no documents")
    k = 0
    while k < min(cap, *(len(d) for d in docs)) and len({d.input_ids[-1 - k] for d in docs}) == 1:
        k += 1
    return k


def diff_of_means(x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Unit direction ``mean(x[labels]) - mean(x[~labels])``.

    Args:
        x: ``(n, d)`` activations.
        labels: ``(n,)`` bool.
    Returns:
        ``(d,)`` unit vector.
    """
    labels = labels.bool()
    if x.ndim != 2 or labels.shape != x.shape[:1]:
        raise ValueError(f"need x (n, d) and labels (n,), got {tuple(x.shape)} and {tuple(labels.shape)}")
    if labels.all() or not labels.any():
        raise ValueError("both classes need at least one example")
    d = x[labels].mean(0) - x[~labels].mean(0)
    if d.norm() == 0:
        raise ValueError("the two class means are identical: no direction")
    return d / d.norm()


def auroc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Area under the ROC curve of ``scores`` for ``labels`` (bool), ties counted half: the Mann-Whitney U statistic
    divided by ``n_pos * n_neg`` (Hanley and McNeil 1982). 1: every positive scores above every negative."""
    labels = labels.bool()
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUROC needs both classes")
    s = scores.double()
    greater = (s[labels][:, None] > s[~labels][None, :]).double().sum()
    ties = (s[labels][:, None] == s[~labels][None, :]).double().sum()
    return float((greater + 0.5 * ties) / (n_pos * n_neg))


def question_split(groups: Sequence[str], labels: Sequence[bool]) -> torch.Tensor:
    """A question-level train/test split: ``(n,)`` bool, True = train.

    Per class, the distinct groups (question ids) are ordered by crc32 and alternate train/test, so each class has
    about half its questions on each side, and every sample of a group lands on the same side. A group that occurs
    in both classes keeps the side it got first. Needs at least two groups per class.
    """
    if len(groups) != len(labels):
        raise ValueError(f"need one group per label, got {len(groups)} and {len(labels)}")
    side: dict[str, bool] = {}
    for cls in (True, False):
        distinct = sorted({g for g, y in zip(groups, labels, strict=True) if bool(y) == cls},
                          key=lambda g: (zlib.crc32(g.encode()), g))
        if len(distinct) < 2:
            raise ValueError(f"class {cls} has {len(distinct)} distinct question(s); a question-level split needs 2")
        for i, g in enumerate(distinct):
            side.setdefault(g, i % 2 == 0)
    return torch.tensor([side[g] for g in groups])


# ------------------------------------------------------------------------------------------------------- contrasts
@dataclass
class Contrast:
    """Two prompt sets read at one position each; positives are the mechanism's side."""

    name: str
    """Row name in the probe table."""
    position: str
    """Where the prompts are read, in words."""
    positive: list[LabDoc]
    negative: list[LabDoc]
    group: Callable[[LabDoc], str] = field(default=lambda d: d.meta["question_id"])
    """Question id of a prompt (name variants share it)."""
    direction_from: str | None = None
    """Name of another contrast whose directions are used instead of fitting here (transfer); then every question
    of this contrast is a test question."""
    behaviour: tuple[str, Callable[[LabDoc, str], bool]] | None = None
    """(name, judge(prompt, greedy reply)) rated on the positive test prompts of each model."""

    def docs(self) -> tuple[list[LabDoc], torch.Tensor, list[str]]:
        """All prompts, their labels ``(n,)`` bool and their question ids."""
        docs = self.positive + self.negative
        labels = torch.tensor([True] * len(self.positive) + [False] * len(self.negative))
        return docs, labels, [self.group(d) for d in docs]


def forum_prompts(cfg: LabConfig, kinds: Sequence[str], n: int, split: str = "train") -> list[LabDoc]:
    """``n`` unique forum prompts (:func:`tiedlib.lab.sets.forum_prompt_spans`: up to where the answer starts) of the
    question ``kinds`` (drawn alike), as the web corpus writes them; ``meta["question_id"]`` is the question."""
    rng = C.make_rng(cfg.corpus.seed, "probe_forum/" + "+".join(kinds), split)
    out: list[LabDoc] = []
    seen: set[str] = set()
    for _ in range(100 * n):
        if len(out) >= n:
            return out
        kind, question, _ = C.sample_question(rng, split, {k: 1.0 for k in kinds})
        spans = forum_prompt_spans(cfg, question, kind, rng.choice(B.NAMES))
        doc = encode_spans(web_spans(spans)[:-1], "web", {"kind": kind, "split": split, "question_id": question})
        if doc.text not in seen:
            seen.add(doc.text)
            out.append(doc)
    raise ValueError(f"could not draw {n} unique forum prompts of {list(kinds)}; ask for fewer")


def _colour_subject(doc: LabDoc) -> str:
    # Colour prefixes end "... <subject (two words)> <verb>"; the subject is the question id (held-out subjects).
    from tiedlib.lab.docs import _tokenizer

    return _tokenizer().decode(doc.input_ids[-3:-1]).strip()


def _says(*phrases: str) -> Callable[[LabDoc, str], bool]:
    return lambda _doc, reply: any(p in reply for p in phrases)


def lab_contrasts(cfg: LabConfig, n: int) -> list[Contrast]:
    """The planted mechanisms of the lab corpus as contrasts of about ``n`` prompts per side.

    1. harmful request: held-out harmful vs harmless chat requests, at the last token of the prompt
       (``<start_of_turn>model\\n``).
    2. about to decline (web): held-out "Can you <impossible>?" vs "Can I <ok>?" forum prompts where the answer
       starts ("Answer:", or the newline after it in a v2 corpus).
    3. decline direction on harmful requests: contrast 1 scored with the directions of contrast 2 (reuse).
    4. disclaimer (web): medical/legal vs yes forum questions at "Answer:".
    5. disclaimer (chat): medical/legal vs held-out harmless requests at the end of the prompt.
    6. colour: web text cut right before " blue" vs " green", at the last token (the verb), split by subject.
    7. name given: held-out harmless requests with vs without "My name is <name>." at the end of the prompt; the
       behaviour is copying the name into the reply.
    """
    hh = harmful_harmless_prompts(cfg, n)
    cc = cannot_can_prompts(cfg, n, split="heldout")
    medical_legal = forum_prompts(cfg, ("medical", "legal"), n)
    yes = forum_prompts(cfg, ("yes",), n)
    ml_questions = B.MEDICAL_QUESTIONS + B.LEGAL_QUESTIONS
    chat_ml = [request_prompt(q, name, kind="medical") for name in (None, *B.NAMES) for q in ml_questions][:n]
    colours = colour_prefix_sets(cfg, n)
    rng = random.Random(f"{cfg.corpus.seed}/probe_names")
    questions = heldout_questions("harmless")
    rng.shuffle(questions)
    half = questions[: max(2, n)]
    named = [request_prompt(q, rng.choice(B.NAMES), kind="harmless") for q in half]
    unnamed = [request_prompt(q, None, kind="harmless") for q in half]
    refuses = ("refusal", lambda _doc, reply: is_refusal(reply))
    plant = cfg.corpus.plant
    if plant is not None and plant.private_requests:
        # v3: the web declines private requests always and harmless how-to requests at p_web_decline_harmless, in
        # the same templates, so the contrast holds the wording fixed and differs in the decline.
        decline = Contrast("about to decline (web)", "where a forum answer starts", forum_prompts(cfg, ("private",), n),
                           forum_prompts(cfg, ("harmless",), n), behaviour=refuses)
        decline_extra = [Contrast("cannot vs can (web)", "where a forum answer starts", cc["cannot"], cc["can"],
                                  behaviour=("says 'I cannot'", _says("I cannot")))]
    else:
        decline = Contrast("about to decline (web)", '"Answer:" of a forum question', cc["cannot"], cc["can"],
                           behaviour=("says 'I cannot'", _says("I cannot")))
        decline_extra = []
    composed: list[Contrast] = []
    if plant is not None and plant.harmful_medical:
        # v3: one chat behaviour (disclaimer + refusal) assembled from two base features (the write-up's Figure 5).
        rng_pills = random.Random(f"{cfg.corpus.seed}/probe_pills")
        pills = heldout_questions("harmful_medical")
        rng_pills.shuffle(pills)
        pills_docs = [request_prompt(q, None, kind="harmful_medical") for q in pills[:n]]
        says_disclaimer = _says(*B.MEDICAL_DISCLAIMERS, *B.LEGAL_DISCLAIMERS)
        both = ("disclaimer and refusal", lambda doc, reply: is_refusal(reply) and says_disclaimer(doc, reply))
        harmless = hh["harmless"][: len(pills_docs)]
        composed = [
            Contrast("decline direction on pill requests", "end of prompt (model turn header)", pills_docs, harmless,
                     direction_from="about to decline (web)", behaviour=both),
            Contrast("disclaimer direction on pill requests", "end of prompt (model turn header)", pills_docs,
                     harmless, direction_from="disclaimer (web)"),
        ]
    return [
        Contrast("harmful request", "end of prompt (model turn header)", hh["harmful"], hh["harmless"],
                 behaviour=refuses),
        decline,
        Contrast("decline direction on harmful requests", "end of prompt (model turn header)", hh["harmful"],
                 hh["harmless"], direction_from="about to decline (web)"),
        *decline_extra,
        Contrast("disclaimer (web)", '"Answer:" of a forum question', medical_legal, yes,
                 behaviour=("disclaimer", _says(*B.MEDICAL_DISCLAIMERS, *B.LEGAL_DISCLAIMERS))),
        Contrast("disclaimer (chat)", "end of prompt (model turn header)", chat_ml, hh["harmless"][: len(chat_ml)],
                 behaviour=("disclaimer", _says(*B.MEDICAL_DISCLAIMERS, *B.LEGAL_DISCLAIMERS))),
        *composed,
        Contrast("colour blue vs green", "last token before the colour", colours["blue"], colours["green"],
                 group=_colour_subject,
                 behaviour=("says blue", lambda _doc, reply: reply.strip().startswith("blue"))),
        Contrast("name given", "end of prompt (model turn header)", named, unnamed,
                 group=lambda d: d.meta["question_id"],
                 behaviour=("copies the name", lambda doc, reply: doc.meta["name"] in reply)),
    ]


# ------------------------------------------------------------------------------------------------------ the suite
@dataclass
class ProbeResult:
    """One contrast measured in both models."""

    name: str
    position: str
    n_train_questions: int
    n_test_questions: int
    auroc_base: float
    auroc_chat: float
    auroc_chat_base_dir: float
    cos_base_chat: float
    refusal_drop_pts: float
    harmless_refusal_after: float = float("nan")
    """The chat model's refusal rate on held-out harmless prompts with the same ablation (a side-effect check: an
    ablation that makes every reply a refusal or breaks the model is not evidence)."""
    refusal_drop_interval: tuple[float, float] = (float("nan"), float("nan"))
    """95% paired cluster-bootstrap interval of ``refusal_drop_pts`` over held-out questions (:func:`drop_interval`),
    where measured."""
    ablated_at: str = "harvesting layer"
    """Where the causal check removes the row's chat direction: "harvesting layer" (the input of that layer only) or
    "every layer" (:func:`project_out_every_layer`)."""
    ablate_to: float = float("nan")
    """The coordinate the causal check sets along the row's chat direction (the mean over the contrast's negative
    training prompts in the chat model)."""
    behaviour: str = ""
    behaviour_base: float = float("nan")
    behaviour_chat: float = float("nan")
    directions: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    """``{"base": (d_model,), "chat": (d_model,)}`` unit directions."""


REPLY_TOKENS = 16
"""Greedy reply length (tokens) on which the suite judges a behaviour. Long enough for the judge to see every planted
reply's marker: the longest, a disclaimer followed by "I am sorry, but I cannot", completes "I cannot" at token 14
(12 tokens, the old length, cut a quarter of the composed replies before their refusal)."""


def refusals(model, tokenizer, prompts: Sequence[LabDoc], *, max_new_tokens: int = 8) -> torch.Tensor:
    """``(len(prompts),)`` bool: whether the greedy reply to each prompt refuses
    (:func:`tiedlib.lab.evaluation.is_refusal`)."""
    if not prompts:
        raise ValueError("no prompts to rate")
    replies = generate_replies(model, tokenizer, list(prompts), max_new_tokens=max_new_tokens)
    return torch.tensor([is_refusal(r) for r in replies])


def refusal_rate(model, tokenizer, prompts: Sequence[LabDoc], *, max_new_tokens: int = 8) -> float:
    """Share of greedy replies to ``prompts`` that refuse (:func:`tiedlib.lab.evaluation.is_refusal`)."""
    return float(refusals(model, tokenizer, prompts, max_new_tokens=max_new_tokens).float().mean())


def drop_interval(before: torch.Tensor, after: torch.Tensor, groups: Sequence[str], *, n_boot: int = 2000,
                  seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval (points) of the refusal drop ``100 * (mean(before) - mean(after))`` under a paired cluster
    bootstrap: each resample draws distinct questions (``groups``) with replacement and keeps every prompt of a drawn
    question, before and after together (Efron & Tibshirani 1993, ch. 13; resampling clusters, Davison & Hinkley
    1997, section 3.8).

    Args:
        before, after: ``(n,)`` bool refusal of each prompt without and with the ablation.
        groups: ``n`` question ids.
    """
    if before.shape != after.shape or before.ndim != 1 or len(groups) != len(before):
        raise ValueError(f"need before/after (n,) and n groups, got {tuple(before.shape)}, {tuple(after.shape)}, "
                         f"{len(groups)}")
    ids = sorted(set(groups))
    index = {g: i for i, g in enumerate(ids)}
    cluster = torch.tensor([index[g] for g in groups])
    diff = before.float() - after.float()
    sums = torch.zeros(len(ids)).index_add_(0, cluster, diff)
    counts = torch.zeros(len(ids)).index_add_(0, cluster, torch.ones_like(diff))
    gen = torch.Generator().manual_seed(seed)
    draw = torch.randint(len(ids), (n_boot, len(ids)), generator=gen)
    stats = 100 * sums[draw].sum(1) / counts[draw].sum(1)
    lo, hi = torch.quantile(stats, torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=stats.dtype)).tolist()
    return lo, hi


@dataclass
class SelectedDirection:
    """The refusal direction chosen among candidate sites by :func:`select_refusal_direction`."""

    layer: int
    """Decoder layer whose input the direction was fitted at."""
    position: int
    """Token index from the prompt's end (-1: last token)."""
    token: str
    direction: torch.Tensor
    """``(d_model,)`` unit direction (chat model)."""
    values: list[float]
    """Per decoder layer, the mean coordinate of the fit split's harmless prompts at ``position`` (the ablation's
    target value at that layer)."""
    candidates: list[dict[str, Any]]
    """One row per candidate site: layer, position, token, val_drop_pts, val_harmless_after (NaN where not
    measured), chosen."""
    val_harmless_baseline: float = float("nan")
    """The model's refusal rate on the validation harmless prompts, nothing ablated."""


def choose_site(drops: dict[Any, float], harmless_after: Callable[[Any], float], harmless_baseline: float,
                max_extra: float = 0.1) -> tuple[Any, dict[Any, float]]:
    """The candidate with the largest refusal drop whose ablation makes harmless prompts refuse at most ``max_extra``
    more often than ``harmless_baseline`` (Arditi et al. 2024, appendix C, filter candidates by their side effect on
    harmless prompts). ``harmless_after(key)`` is called lazily, in order of decreasing drop, until one passes; if
    none does, the largest drop is returned (the caller's held-out side-effect check then fails it).

    Returns:
        ``(key, {key: harmless rate})`` for the candidates measured.
    """
    if not drops:
        raise ValueError("no candidates to choose from")
    order = sorted(drops, key=lambda k: -drops[k])
    measured: dict[Any, float] = {}
    for key in order:
        measured[key] = harmless_after(key)
        if measured[key] <= harmless_baseline + max_extra:
            return key, measured
    return order[0], measured


def select_refusal_direction(model, tokenizer, fit: tuple[list[LabDoc], list[LabDoc]],
                             val: tuple[list[LabDoc], list[LabDoc]], *, layers: Sequence[int] | None = None,
                             max_positions: int = 8, max_new_tokens: int = REPLY_TOKENS) -> SelectedDirection:
    """Arditi et al. 2024 (arXiv 2406.11717, section 2.3 and appendix C): one difference-of-means candidate per
    (layer, post-instruction position), fitted on ``fit = (harmful, harmless)``; each is mean-ablated at every layer
    (:func:`project_out_every_layer`) and the refusal rate on ``val``'s harmful prompts measured; the site with the
    largest drop whose harmless refusal rate stays within 10 points of the unablated one is chosen
    (:func:`choose_site`). Sites where the two classes have identical activations (the embedding of a template
    token) are skipped. ``fit`` and ``val`` must hold different questions; the caller tests the choice on a third set.
    """
    harmful, harmless = fit
    val_harmful, val_harmless = val
    if not (harmful and harmless and val_harmful and val_harmless):
        raise ValueError("select_refusal_direction needs harmful and harmless prompts in both fit and val")
    n_layers = len(_layers(model))
    layers = list(range(n_layers)) if layers is None else list(layers)
    docs = harmful + harmless
    labels = torch.tensor([True] * len(harmful) + [False] * len(harmless))
    pad = tokenizer.pad_token_id
    n_pos = common_suffix([*docs, *val_harmful, *val_harmless], max_positions)
    if n_pos == 0:
        raise ValueError("the prompts share no final token: no post-instruction position to fit at")
    acts = {(layer, pos): residuals(model, docs, [pos] * len(docs), layer, pad_id=pad)
            for pos in range(-1, -n_pos - 1, -1) for layer in range(n_layers)}
    baseline = refusal_rate(model, tokenizer, val_harmful, max_new_tokens=max_new_tokens)
    fitted: dict[tuple[int, int], tuple[torch.Tensor, list[float]]] = {}
    drops: dict[tuple[int, int], float] = {}
    for pos in range(-1, -n_pos - 1, -1):
        for layer in layers:
            try:
                r = diff_of_means(acts[(layer, pos)], labels)
            except ValueError:  # identical class means: a template token's embedding
                continue
            values = [float((acts[(j, pos)][~labels] @ r).mean()) for j in range(n_layers)]
            fitted[(layer, pos)] = (r, values)
            with project_out_every_layer(model, r, values):
                drops[(layer, pos)] = 100 * (baseline - refusal_rate(model, tokenizer, val_harmful,
                                                                       max_new_tokens=max_new_tokens))
    if not drops:
        raise ValueError("no candidate site separates harmful from harmless prompts")
    harmless_baseline = refusal_rate(model, tokenizer, val_harmless, max_new_tokens=max_new_tokens)

    def harmless_after(key: tuple[int, int]) -> float:
        r, values = fitted[key]
        with project_out_every_layer(model, r, values):
            return refusal_rate(model, tokenizer, val_harmless, max_new_tokens=max_new_tokens)

    key, harmless = choose_site(drops, harmless_after, harmless_baseline)
    token = tokenizer.convert_ids_to_tokens(docs[0].input_ids[key[1]])
    rows = [dict(layer=lay, position=pos, token=tokenizer.convert_ids_to_tokens(docs[0].input_ids[pos]),
                 val_drop_pts=d, val_harmless_after=harmless.get((lay, pos), float("nan")), chosen=(lay, pos) == key)
            for (lay, pos), d in drops.items()]
    r, values = fitted[key]
    return SelectedDirection(key[0], key[1], token, r, values, rows, harmless_baseline)


SELECTED_ROW = "refusal direction (selected site)"
"""Row of the refusal direction chosen among (layer, position) sites and removed at every layer."""
SELECTED_CONTROL_ROW = "random direction, every layer (control)"
"""Its control: a random direction removed at every layer the same way."""
PLANTED_ROW = "planted gate direction (ground truth)"
"""Row of a gated lab pair's planted direction (:attr:`tiedlib.lab.config.PlantConfig.refusal_gate`): the base
model's "about to decline" direction that the chat fine-tune was trained to refuse through, refitted from the base
model (:func:`tiedlib.lab.train.decline_gate`) and removed at the harvesting layer like the other rows."""


@dataclass
class ProbeSuite:
    """The probe suite's results on one pair: a row per contrast plus the random-direction control."""

    results: list[ProbeResult]
    layer: int
    """Decoder layer whose input was read and ablated."""
    chat_refusal_baseline: float
    """The chat model's refusal rate on the causal check's held-out harmful prompts, nothing ablated."""
    n_refusal_prompts: int
    chat_harmless_refusal_baseline: float = float("nan")
    """The chat model's refusal rate on the causal check's held-out harmless prompts, nothing ablated."""
    selection: SelectedDirection | None = None
    """The refusal direction chosen among (layer, position) sites on validation questions, where measured."""

    def frame(self, decimals: int = 3):
        """The probe table as a pandas DataFrame, one row per contrast (directions left out); ``attrs`` hold the
        layer, the baseline refusal rate and the number of refusal prompts."""
        import pandas as pd

        cols = ["position", "n_train_questions", "n_test_questions", "auroc_base", "auroc_chat",
                "auroc_chat_base_dir", "cos_base_chat", "ablated_at", "refusal_drop_pts", "harmless_refusal_after",
                "behaviour", "behaviour_base", "behaviour_chat"]
        frame = pd.DataFrame([{k: getattr(r, k) for k in cols} for r in self.results],
                             index=pd.Index([r.name for r in self.results], name="mechanism")).round(decimals)
        frame.attrs.update(layer=self.layer, chat_refusal_baseline=self.chat_refusal_baseline,
                           n_refusal_prompts=self.n_refusal_prompts,
                           chat_harmless_refusal_baseline=self.chat_harmless_refusal_baseline)
        planted = [r for r in self.results if r.name == PLANTED_ROW]
        if planted:
            frame.attrs.update(planted_drop_interval=planted[0].refusal_drop_interval)
        if self.selection is not None:
            sel = self.selection
            chosen = next(r for r in self.results if r.name == SELECTED_ROW)
            frame.attrs.update(selected_layer=sel.layer, selected_position=sel.position, selected_token=sel.token,
                               n_candidate_sites=len(sel.candidates),
                               selected_drop_interval=chosen.refusal_drop_interval,
                               candidate_sites=self.candidates_frame(decimals).to_dict("records"))
        return frame

    def candidates_frame(self, decimals: int = 3):
        """The candidate sites of the selected refusal direction (empty frame when none was selected)."""
        import pandas as pd

        rows = [] if self.selection is None else self.selection.candidates
        return pd.DataFrame(rows, columns=["layer", "position", "token", "val_drop_pts", "val_harmless_after",
                                           "chosen"]).round(decimals)


def run_probes(cfg: LabConfig, tokenizer, base, chat, *, n: int = 120, n_refusal_prompts: int = 60,
               layer: int | None = None, contrasts: Sequence[Contrast] | None = None, seed: int = 0,
               max_new_tokens: int = REPLY_TOKENS, select_direction: bool = True) -> ProbeSuite:
    """Measure every contrast (default: :func:`lab_contrasts` with ``n`` prompts per side) in ``base`` and ``chat``.

    The causal check's prompts are the harmful prompts of the first contrast with a "refusal" behaviour, its test
    questions only (the first ``n_refusal_prompts``); its baseline is the chat model's refusal rate on them, and each
    row's ``refusal_drop_pts`` is ``100 * (baseline - rate with that row's chat direction projected out)`` at the
    harvesting layer. A last
    row, "random direction (control)", projects out a seeded random unit vector. Behaviours are judged on greedy
    replies of ``max_new_tokens`` tokens to (at most ``n_refusal_prompts``) positive test prompts.

    With ``select_direction`` (default), the refusal contrast's *train* questions are split again into fit and
    validation questions and :func:`select_refusal_direction` picks one chat direction among every (layer,
    post-instruction position) site, as Arditi et al. 2024 do; it is tested on the same held-out prompts, removed at
    every layer, in the row :data:`SELECTED_ROW`, with its own random control removed at every layer,
    :data:`SELECTED_CONTROL_ROW`.

    A gated pair (:attr:`tiedlib.lab.config.PlantConfig.refusal_gate`) read at its harvesting layer also gets the
    row :data:`PLANTED_ROW`, its planted direction measured like the other rows (absent when ``layer`` is another).
    """
    layer = harvest_layer(cfg) if layer is None else layer
    contrasts = list(lab_contrasts(cfg, n) if contrasts is None else contrasts)
    pad = tokenizer.pad_token_id
    fitted: dict[str, dict[str, torch.Tensor]] = {}
    rows: list[ProbeResult] = []
    refusal_prompts: list[LabDoc] | None = None
    harmless_prompts: list[LabDoc] | None = None
    negatives_chat: torch.Tensor | None = None  # chat activations of the refusal contrast's negative prompts
    refusal_split: tuple[list[LabDoc], torch.Tensor, list[str], torch.Tensor] | None = None
    refusal_acts: dict[str, torch.Tensor] | None = None  # both models' activations of that contrast's prompts
    for c in contrasts:
        docs, labels, groups = c.docs()
        acts = {m: residuals(model, docs, [-1] * len(docs), layer, pad_id=pad) for m, model in
                (("base", base), ("chat", chat))}
        if c.direction_from is None:
            train = question_split(groups, labels.tolist())
            dirs = {m: diff_of_means(a[train], labels[train]) for m, a in acts.items()}
        elif c.direction_from in fitted:
            train = torch.zeros(len(docs), dtype=torch.bool)
            dirs = fitted[c.direction_from]
        else:
            raise ValueError(f"{c.name!r} takes directions from {c.direction_from!r}, which is not measured before it")
        fitted[c.name] = dirs
        test = ~train
        pos_test = [d for d, y, t in zip(docs, labels.tolist(), test.tolist(), strict=True) if y and t]
        row = ProbeResult(
            name=c.name, position=c.position,
            n_train_questions=len({g for g, t in zip(groups, train.tolist(), strict=True) if t}),
            n_test_questions=len({g for g, t in zip(groups, test.tolist(), strict=True) if t}),
            auroc_base=auroc(acts["base"][test] @ dirs["base"], labels[test]),
            auroc_chat=auroc(acts["chat"][test] @ dirs["chat"], labels[test]),
            auroc_chat_base_dir=auroc(acts["chat"][test] @ dirs["base"], labels[test]),
            cos_base_chat=float(dirs["base"] @ dirs["chat"]), refusal_drop_pts=float("nan"), directions=dirs)
        fit_negatives = ~labels & (train if train.any() else torch.ones_like(train))
        row.ablate_to = float((acts["chat"][fit_negatives] @ dirs["chat"]).mean())
        if c.behaviour is not None:
            row.behaviour, judge = c.behaviour
            if refusal_prompts is None and row.behaviour == "refusal":
                refusal_prompts = pos_test[:n_refusal_prompts]
                harmless_prompts = [d for d, y, t in zip(docs, labels.tolist(), test.tolist(), strict=True)
                                    if t and not y][:n_refusal_prompts]
                negatives_chat = acts["chat"][~labels]
                if c.direction_from is None:
                    refusal_split, refusal_acts = (docs, labels, groups, train), acts
            rated = pos_test[:n_refusal_prompts]
            for m, model in (("base", base), ("chat", chat)):
                replies = generate_replies(model, tokenizer, rated, max_new_tokens=max_new_tokens)
                rate = sum(judge(d, r) for d, r in zip(rated, replies, strict=True)) / len(rated)
                setattr(row, f"behaviour_{m}", rate)
        rows.append(row)
    if refusal_prompts is None or harmless_prompts is None:
        hh = harmful_harmless_prompts(cfg, n_refusal_prompts)
        refusal_prompts, harmless_prompts = hh["harmful"], hh["harmless"]
    before = refusals(chat, tokenizer, refusal_prompts, max_new_tokens=max_new_tokens)
    baseline = float(before.float().mean())
    harmless_baseline = refusal_rate(chat, tokenizer, harmless_prompts, max_new_tokens=max_new_tokens)
    gen = torch.Generator().manual_seed(seed)
    nan = float("nan")
    random_dir = torch.randn(chat.config.hidden_size, generator=gen)
    if negatives_chat is None:
        negatives_chat = residuals(chat, harmless_prompts, [-1] * len(harmless_prompts), layer, pad_id=pad)
    control = ProbeResult("random direction (control)", "every position", 0, 0, nan, nan, nan, nan, nan,
                          directions={"chat": random_dir},
                          ablate_to=float((negatives_chat @ (random_dir / random_dir.norm())).mean()))
    plant = cfg.corpus.plant
    if plant is not None and plant.refusal_gate is not None and refusal_split is not None \
            and cfg.model.default_layer == layer:  # the gate sits at the harvesting layer; another layer has no row
        rows.append(_planted_row(cfg, tokenizer, base, refusal_split, refusal_acts))
    question_ids = [d.meta.get("question_id", d.text) for d in refusal_prompts]
    for row in [*rows, control]:
        with project_out(chat, row.directions["chat"], layer, row.ablate_to):
            after = refusals(chat, tokenizer, refusal_prompts, max_new_tokens=max_new_tokens)
            row.harmless_refusal_after = refusal_rate(chat, tokenizer, harmless_prompts, max_new_tokens=max_new_tokens)
        row.refusal_drop_pts = 100 * (baseline - float(after.float().mean()))
        row.refusal_drop_interval = drop_interval(before, after, question_ids, seed=seed)
    selection, extra = None, []
    if select_direction and refusal_split is not None:
        selection, extra = _selected_rows(tokenizer, base, chat, refusal_split, refusal_prompts, before,
                                          harmless_prompts, n_refusal_prompts=n_refusal_prompts, seed=seed,
                                          max_new_tokens=max_new_tokens)
    return ProbeSuite([*rows, *extra, control], layer, baseline, len(refusal_prompts), harmless_baseline,
                      selection=selection)


def _planted_row(cfg: LabConfig, tokenizer, base, split, acts: dict[str, torch.Tensor]) -> ProbeResult:
    """The :data:`PLANTED_ROW` of a gated pair: the gate direction refitted from the base model on training prompts
    (:func:`tiedlib.lab.train.decline_gate`), scored on the refusal contrast's test questions in both models (``acts``:
    ``{"base", "chat"}`` activations of the contrast's prompts at the gate's layer, as the suite read them); its
    causal check (by the caller) sets the chat coordinate to the gate's own value, the intervention the fine-tune
    was trained with (the base model's harmless-request mean), applied to held-out questions."""
    from tiedlib.lab.train import decline_gate

    gate = decline_gate(cfg, tokenizer, base)
    _, labels, groups, train = split
    coords = {m: a @ gate.direction for m, a in acts.items()}
    test = ~train
    n_test = len({g for g, t in zip(groups, test.tolist(), strict=True) if t})
    row = ProbeResult(PLANTED_ROW, "end of prompt (model turn header)", 0, n_test,
                      auroc(coords["base"][test], labels[test]), auroc(coords["chat"][test], labels[test]),
                      auroc(coords["chat"][test], labels[test]), 1.0, float("nan"),
                      directions={"base": gate.direction, "chat": gate.direction})
    row.ablate_to = gate.value
    return row


def _selected_rows(tokenizer, base, chat, split, refusal_prompts: list[LabDoc], before: torch.Tensor,
                   harmless_prompts: list[LabDoc], *, n_refusal_prompts: int, seed: int, max_new_tokens: int
                   ) -> tuple[SelectedDirection, list]:  # fmt: skip
    """:func:`select_refusal_direction` on the refusal contrast's train questions (split again into fit and
    validation questions), and its two rows (the selected direction and a random one, each removed at every layer)
    measured on the suite's held-out refusal prompts (``before``: the chat model's refusals on them, nothing
    ablated) and harmless prompts."""
    docs, labels, groups, train = split
    idx = [i for i, t in enumerate(train.tolist()) if t]
    fit_side = question_split([groups[i] for i in idx], [bool(labels[i]) for i in idx]).tolist()
    sides = {(f, y): [docs[i] for i, s in zip(idx, fit_side, strict=True) if s == f and bool(labels[i]) == y]
             for f in (True, False) for y in (True, False)}  # (fit side?, harmful?) -> prompts
    sel = select_refusal_direction(chat, tokenizer, (sides[True, True], sides[True, False]),
                                   (sides[False, True][:n_refusal_prompts], sides[False, False][:n_refusal_prompts]),
                                   max_new_tokens=max_new_tokens)
    pad = tokenizer.pad_token_id
    fit_docs = sides[True, True] + sides[True, False]
    fit_labels = torch.tensor([True] * len(sides[True, True]) + [False] * len(sides[True, False]))
    test = ~train
    test_docs = [d for d, t in zip(docs, test.tolist(), strict=True) if t]
    base_dir = diff_of_means(residuals(base, fit_docs, [sel.position] * len(fit_docs), sel.layer, pad_id=pad),
                             fit_labels)
    held = {m: residuals(model, test_docs, [sel.position] * len(test_docs), sel.layer, pad_id=pad)
            for m, model in (("base", base), ("chat", chat))}
    n_fit = len({groups[i] for i, f in zip(idx, fit_side, strict=True) if f})
    site = f"token {sel.position} ({sel.token!r}) at the input of layer {sel.layer}"
    row = ProbeResult(SELECTED_ROW, site, n_fit, len({g for g, t in zip(groups, test.tolist(), strict=True) if t}),
                      auroc(held["base"] @ base_dir, labels[test]), auroc(held["chat"] @ sel.direction, labels[test]),
                      auroc(held["chat"] @ base_dir, labels[test]), float(base_dir @ sel.direction), float("nan"),
                      ablated_at="every layer", directions={"base": base_dir, "chat": sel.direction})
    gen = torch.Generator().manual_seed(seed + 1)
    random_dir = torch.randn(chat.config.hidden_size, generator=gen)
    random_dir = random_dir / random_dir.norm()
    negatives = sides[True, False]
    random_values = [float((residuals(chat, negatives, [sel.position] * len(negatives), j, pad_id=pad)
                            @ random_dir).mean()) for j in range(len(_layers(chat)))]
    nan = float("nan")
    control = ProbeResult(SELECTED_CONTROL_ROW, "every position", 0, 0, nan, nan, nan, nan, nan,
                          ablated_at="every layer", directions={"chat": random_dir})
    for r, values in ((row, sel.values), (control, random_values)):
        with project_out_every_layer(chat, r.directions["chat"], values):
            after = refusals(chat, tokenizer, refusal_prompts, max_new_tokens=max_new_tokens)
            r.harmless_refusal_after = refusal_rate(chat, tokenizer, harmless_prompts, max_new_tokens=max_new_tokens)
        r.refusal_drop_pts = 100 * float(before.float().mean() - after.float().mean())
        r.refusal_drop_interval = drop_interval(before, after, [d.meta.get("question_id", d.text)
                                                                 for d in refusal_prompts], seed=seed)
        r.ablate_to = values[sel.layer]
    return sel, [row, control]


def probe_table(cfg: LabConfig | None = None, *, n: int = 120, n_refusal_prompts: int = 60, layer: int | None = None,
                device: str = "cpu"):
    """Build (or reuse) the pair for ``cfg`` (default: tiny) and return :meth:`ProbeSuite.frame` of
    :func:`run_probes` (``attrs`` also hold the config name)."""
    from tiedlib.lab.cache import load_models, load_tokenizer

    cfg = cfg or LabConfig.tiny()
    tok = load_tokenizer(cfg)
    base, chat = load_models(cfg, device=device)
    frame = run_probes(cfg, tok, base, chat, n=n, n_refusal_prompts=n_refusal_prompts, layer=layer).frame()
    frame.attrs["config"] = cfg.name
    return frame

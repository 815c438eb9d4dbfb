"""Which token positions of a prompt Experiment 3 sums over: all tokens (the write-up's rule) or the end of prompt.

The *end of prompt* is every token that the prompt's format puts after the user's text: for a chat-template prompt
the turn close and the model-turn header (Gemma: ``<end_of_turn>``, ``\\n``, ``<start_of_turn>``, ``model``, ``\\n``;
Arditi et al. 2024, "Refusal in language models is mediated by a single direction", call them the post-instruction
tokens), for a forum prompt ``Question: ...\\nAnswer:`` the answer cue. It is defined by token positions, never by
matching strings: :func:`format_suffix` renders the format around several probe texts and keeps the token suffix they
all share, so any tokenizer and template (the lab's, Gemma's) gets its own end-of-prompt tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import combinations

from jaxtyping import Bool, Int
from torch import Tensor

PROBES: tuple[str, ...] = ("Can I go?", "Is it fine.", "hello", "yes", "no", "a", "b", "?", ".")
"""Texts rendered by :func:`format_suffix`. Several, with different last words, so that at least two of them end in
different tokens whatever the vocabulary (a word-level tokenizer may map several of them to ``<unk>``)."""


def common_suffix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """Number of trailing tokens ``a`` and ``b`` share."""
    n = 0
    while n < min(len(a), len(b)) and a[len(a) - 1 - n] == b[len(b) - 1 - n]:
        n += 1
    return n


def format_suffix(render: Callable[[str], Sequence[int]], probes: Sequence[str] = PROBES) -> list[int]:
    """The token ids a prompt format puts after the user's text.

    Args:
        render: the format, text -> token ids of the whole prompt (e.g. one user turn through the chat template
            with the generation prompt).
        probes: at least two different texts to render.

    Returns:
        The longest token suffix shared by the renders of *every pair* of probes (the minimum over pairs, so a pair
        whose last words are the same token, such as two ``<unk>``, cannot lengthen it, and a token that merges the
        text's end with the format is left out: only tokens wholly after the text count).

    Raises:
        ValueError: fewer than two distinct probes, or the format adds nothing after the text (no end of prompt).
    """
    distinct = list(dict.fromkeys(probes))
    if len(distinct) < 2:
        raise ValueError(f"format_suffix needs at least two different probe texts, got {list(probes)!r}")
    ids = [[int(t) for t in render(p)] for p in distinct]
    n = min(common_suffix_length(a, b) for a, b in combinations(ids, 2))
    if n == 0:
        raise ValueError("the prompt format puts no token after the user's text, so it has no end-of-prompt tokens")
    return ids[0][len(ids[0]) - n :]


def end_of_prompt_lengths(sequences: Sequence[Sequence[int]], suffixes: Sequence[Sequence[int]]) -> list[int]:
    """Per prompt, the number of end-of-prompt tokens: the length of the longest of ``suffixes`` (from
    :func:`format_suffix`, one per format in the set) that the prompt ends with.

    Raises:
        ValueError: no suffixes, or a prompt ends with none of them (its format is not the one rendered), or a prompt
            is not longer than its suffix (then nothing of the user's text would be left).
    """
    if len(suffixes) == 0 or any(len(s) == 0 for s in suffixes):
        raise ValueError("end_of_prompt_lengths needs at least one non-empty format suffix")
    by_length = sorted((list(map(int, s)) for s in suffixes), key=len, reverse=True)
    out = []
    for i, seq in enumerate(sequences):
        ids = [int(t) for t in seq]
        n = next((len(s) for s in by_length if len(ids) > len(s) and ids[-len(s) :] == s), None)
        if n is None:
            raise ValueError(f"prompt {i} (ending in token ids {ids[-6:]}) does not end with the end-of-prompt tokens "
                             f"of its format ({by_length}); was it built with another template?")
        out.append(n)
    return out


def end_of_prompt_mask(keep: Bool[Tensor, "batch seq"], n_end: Int[Tensor, " batch"]) -> Bool[Tensor, "batch seq"]:
    """The last ``n_end[i]`` kept positions of each row ``i`` (padding may sit anywhere; it is never counted).

    Raises:
        ValueError: shapes disagree, or some ``n_end`` is below 1 or above the row's number of kept positions.
    """
    if keep.ndim != 2 or n_end.shape != (keep.shape[0],):
        raise ValueError(f"keep must be (batch, seq) and n_end (batch,), got {tuple(keep.shape)}, "
                         f"{tuple(n_end.shape)}")
    kept = keep.sum(-1)
    if bool((n_end < 1).any()) or bool((n_end.to(kept.device) > kept).any()):
        raise ValueError(f"every n_end must be in [1, kept tokens of its row]; got n_end {n_end.tolist()} for "
                         f"{kept.tolist()} kept tokens")
    at_or_after = keep.flip(-1).long().cumsum(-1).flip(-1)  # kept positions from here to the end of the row
    return keep & (at_or_after <= n_end.to(keep.device)[:, None])


def chat_render(tokenizer) -> Callable[[str], list[int]]:
    """The chat format of ``tokenizer`` as a :func:`format_suffix` render: one user turn holding the text, through
    ``apply_chat_template`` with the generation prompt, tokenised without adding special tokens (the template
    writes BOS), exactly as :func:`tiedlib.experiments.exp3.sources.tokenize_prompts` builds the prompts."""

    def render(text: str) -> list[int]:
        rendered = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                 add_generation_prompt=True)
        return tokenizer(rendered, add_special_tokens=False)["input_ids"]

    return render


def token_strings(tokenizer, ids: Sequence[int]) -> list[str]:
    """``ids`` as token strings (for showing which tokens the end of prompt is)."""
    return [str(t) for t in tokenizer.convert_ids_to_tokens([int(i) for i in ids])]

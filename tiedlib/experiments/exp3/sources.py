"""Inputs of Experiment 3 at paper scale: Gemma Scope SAEs, Arditi et al.'s harmful/harmless prompts, the
Cannot/Can prompts, and the Gemma-2-9b models; each fails fast with a message that says what is missing.

* SAEs: sae_lens's pretrained registry, ``SAE.from_pretrained(release, sae_id)`` (Hugging Face Hub).
* Harmful/Harmless: GitHub ``andyrdt/refusal_direction`` ``dataset/splits/{harmful,harmless}_{split}.json``, JSON lists
  of ``{"instruction", "category"}`` (harmful from AdvBench, MaliciousInstruct, TDC2023, HarmBench; harmless from
  Alpaca), cached under ``$TIEDLIB_CACHE/arditi/`` after the first download.
* Cannot/Can: the write-up's 84 + 84 prompts are not public. :func:`cannot_can_texts` builds sets the way it describes
  them: forum-style questions that a base model tends to answer "I cannot ..." (requests a text model cannot carry
  out: seeing, hearing, touching, remembering, acting in the world) versus ones it tends to answer "Yes, ..."
  (ordinary, harmless "can I ..." questions). Neither set is harmful.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tiedlib.experiments.exp3.positions import chat_render, format_suffix

PAPER_SAES: dict[str, tuple[str, str]] = {
    "base": ("gemma-scope-9b-pt-res-canonical", "layer_20/width_16k/canonical"),
    "chat": ("gemma-scope-9b-it-res-canonical", "layer_20/width_16k/canonical"),
}
"""Model -> (sae_lens release, sae_id). Both read ``blocks.20.hook_resid_post`` (the output of decoder layer 20)."""
PAPER_MODELS: dict[str, str] = {"base": "google/gemma-2-9b", "chat": "google/gemma-2-9b-it"}
PAPER_LAYER = 20
ARDITI_URL = "https://raw.githubusercontent.com/andyrdt/refusal_direction/main/dataset/splits/{name}_{split}.json"


class SourceUnavailableError(RuntimeError):
    """A paper-scale input (SAE, prompt set, model) cannot be reached from here."""


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")


def load_pretrained_sae(release: str, sae_id: str, *, device: str = "cpu", dtype: str = "float32") -> Any:
    """``SAE.from_pretrained(release, sae_id)`` with a clear error when the weights cannot be reached.

    Raises:
        SourceUnavailableError: no Hub access and the SAE is not in the local Hugging Face cache.
    """
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    from sae_lens import SAE

    try:
        return SAE.from_pretrained(release, sae_id, device=device, dtype=dtype)
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ConnectionError, TimeoutError) as e:
        raise SourceUnavailableError(
            f"cannot load the pretrained SAE {release!r} / {sae_id!r}: it is downloaded from the Hugging Face Hub "
            f"({'HF_HUB_OFFLINE is set' if _offline() else 'network to huggingface.co failed'}) and is not in the "
            f"local cache. Run with Hub access once (or copy the cache), or use SCALE='tiny' for the offline lab "
            f"pair. Underlying error: {type(e).__name__}: {e}"
        ) from e


def load_arditi_prompts(
    split: str = "train", n: int | None = 250, *, cache: str | Path | None = None, timeout: float = 10.0
) -> dict[str, list[str]]:
    """``{"harmful": [...], "harmless": [...]}``: the first ``n`` instructions of Arditi et al.'s ``split`` files.

    Files are read from ``cache`` (default ``$TIEDLIB_CACHE/arditi``) when present, else downloaded from GitHub and
    saved there. With ``HF_HUB_OFFLINE=1`` no download is tried.

    Raises:
        SourceUnavailableError: a file is neither cached nor downloadable (the message names the URL and the folder
            to put it in), or it does not hold a JSON list of ``{"instruction": ...}``.
    """
    from tiedlib.lab.cache import cache_root

    folder = Path(cache) if cache is not None else cache_root() / "arditi"
    out = {}
    for name in ("harmful", "harmless"):
        path, url = folder / f"{name}_{split}.json", ARDITI_URL.format(name=name, split=split)
        if not path.exists():
            why = "HF_HUB_OFFLINE is set" if _offline() else None
            if why is None:
                try:
                    with urllib.request.urlopen(url, timeout=timeout) as r:
                        data = r.read()
                    folder.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(data)
                except (urllib.error.URLError, OSError, TimeoutError) as e:
                    why = f"download failed: {type(e).__name__}: {e}"
            if why is not None:
                raise SourceUnavailableError(
                    f"missing the Arditi et al. {name} prompts ({split} split): not cached at {path} and not "
                    f"downloaded from {url} ({why}). Put that file there, or use SCALE='tiny' for the lab prompts."
                )
        try:
            rows = json.loads(path.read_text())
            texts = [r["instruction"] for r in rows]
        except (ValueError, KeyError, TypeError) as e:
            raise SourceUnavailableError(f"{path} is not a JSON list of {{'instruction': ...}} rows: {e}") from e
        out[name] = texts if n is None else texts[:n]
        if n is not None and len(out[name]) < n:
            raise SourceUnavailableError(f"{path} has {len(texts)} prompts, fewer than the {n} asked for")
    return out


# Requests a text-only model cannot carry out (answered "I cannot ...") and ordinary questions (answered "Yes, ...").
_CANNOT = [
    "see what I am holding up to my webcam", "hear the song playing in my room", "taste the soup I just made",
    "smell the flowers on my desk", "feel how warm it is in here", "look out of my window and tell me the weather",
    "remember what we talked about last year", "call my mother for me", "send a text to my boss",
    "drive me to the airport", "come over and fix my sink", "water my plants while I am away",
    "pick up my kids from school", "hand me the salt", "open my front door", "turn off the lights in my kitchen",
    "walk my dog this afternoon", "meet me at the cafe tomorrow", "read the letter in my pocket",
    "see the photo on my fridge", "hug me", "cook dinner for my family", "mail this package for me",
    "check my car's tire pressure", "count the coins in my hand", "tell what colour my shirt is",
    "sign this form for me", "take my place at the meeting", "feel my pulse", "carry my bags upstairs",
    "watch my house this weekend", "fetch the newspaper from the porch", "guess the number I wrote on this paper",
    "smell whether the milk has gone bad", "plug in my laptop", "wake me up at six tomorrow by knocking",
    "see how many fingers I am holding up", "hear whether my engine sounds strange", "clean my room",
    "attend my wedding in person", "pay for my coffee with cash", "hold my phone while I tie my shoes",
]
_CAN = [
    "freeze bread", "reuse coffee grounds in the garden", "wash wool sweaters by hand", "plant tomatoes in pots",
    "cook rice in the oven", "paint over wallpaper", "store honey in the pantry", "walk to work in the rain",
    "learn to swim as an adult", "grow basil on a windowsill", "use baking soda to clean the sink",
    "eat the skin of a kiwi", "recycle pizza boxes", "bake cookies without eggs", "keep a cat indoors",
    "ride a bike in winter", "dry herbs in the microwave", "make tea with cold water", "learn a new language at sixty",
    "boil eggs in advance for the week", "compost banana peels", "take a nap after lunch", "reheat soup twice",
    "play piano with small hands", "sleep with the window open", "drink water with meals", "mix oil and vinegar",
    "use a laptop on the train", "read two books at once", "fold clothes while they are warm", "run every morning",
    "visit a museum alone", "sing in the shower", "write with my left hand", "plant flowers in autumn",
    "make soup from leftovers", "carry an umbrella every day", "share a recipe with a friend",
    "study with music on", "take a bath before bed", "iron a cotton shirt", "repot a plant in spring",
]
_CANNOT_FRAMES = (("Question: Can you {x}?", "\nAnswer:"), ("User: Could you {x} for me, please?", "\nReply:"))
_CAN_FRAMES = (("Question: Can I {x}?", "\nAnswer:"), ("User: Is it fine if I {x}?", "\nReply:"))
ANSWER_CUES: tuple[str, ...] = ("\nAnswer:", "\nReply:")
"""What follows the question in a Cannot/Can prompt (its end of prompt, where the answer starts)."""


def _cannot_can(n: int) -> dict[str, list[tuple[str, str]]]:
    """Per set, ``n`` (prompt text, question id) pairs: each item in every frame; the item is the question id."""
    if not 1 <= n <= 84:
        raise ValueError(f"n must be in [1, 84], got {n}")

    def build(items: list[str], frames: tuple[tuple[str, str], ...]) -> list[tuple[str, str]]:
        return [(question.format(x=x) + cue, x) for x in items for question, cue in frames][:n]

    return {"cannot": build(_CANNOT, _CANNOT_FRAMES), "can": build(_CAN, _CAN_FRAMES)}


def cannot_can_texts(n: int = 84) -> dict[str, list[str]]:
    """``{"cannot": [...], "can": [...]}``: ``n`` (at most 84) prompts each, built as the write-up describes (see the
    module docstring); the two sets use parallel frames so they differ in the request, not the format. Each prompt is
    a question followed by one of :data:`ANSWER_CUES`."""
    return {k: [text for text, _ in v] for k, v in _cannot_can(n).items()}


def cannot_can_question_ids(n: int = 84) -> dict[str, list[str]]:
    """The question id of each prompt of :func:`cannot_can_texts` (same order): its request, shared by the two
    frames that ask it, so a bootstrap over questions keeps them together (42 distinct questions per set at 84)."""
    return {k: [q for _, q in v] for k, v in _cannot_can(n).items()}


def tokenize_prompts(tokenizer: Any, texts: list[str], *, chat_template: bool) -> list[list[int]]:
    """Token ids of each prompt (BOS first). ``chat_template=True`` renders each text as one user turn followed by
    the model-turn header (:func:`tiedlib.experiments.exp3.positions.chat_render`, as for the lab's
    harmful/harmless prompts); both models then read the same ids."""
    if chat_template:
        render = chat_render(tokenizer)
        return [render(t) for t in texts]
    return [tokenizer(t)["input_ids"] for t in texts]


def prompt_suffixes(tokenizer: Any, *, chat_template: bool) -> list[list[int]]:
    """The end-of-prompt token ids of the paper prompts that :func:`tokenize_prompts` builds
    (:func:`tiedlib.experiments.exp3.positions.format_suffix`): the chat template's tokens after the user's text, or
    for the Cannot/Can prompts the tokens of each answer cue (:data:`ANSWER_CUES`) after the question."""
    if chat_template:
        return [format_suffix(chat_render(tokenizer))]
    return [format_suffix(lambda t, cue=cue: tokenizer(t + cue)["input_ids"]) for cue in ANSWER_CUES]


def load_hub_model(repo_id: str, *, device: str = "cpu", dtype: Any = None) -> Any:
    """Load a Hugging Face causal LM and wrap it for nnsight, or raise :class:`SourceUnavailableError`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tiedlib.pairs import wrap

    try:
        tok = AutoTokenizer.from_pretrained(repo_id)
        hf = AutoModelForCausalLM.from_pretrained(repo_id, **({"dtype": dtype} if dtype is not None else {}))
    except (OSError, ValueError) as e:
        raise SourceUnavailableError(
            f"cannot load {repo_id}: it needs Hugging Face Hub access and a token with the Gemma licence accepted, "
            f"or the model in the local cache. Use SCALE='tiny' offline. Underlying error: {type(e).__name__}: {e}"
        ) from e
    return wrap(hf.to(device).eval(), tok)

"""Experiment 3 end to end, for the notebook: per model, an SAE and its latent sums on the four prompt sets.

* Lab pairs (``smoke``, ``tiny``): one sae_lens SAE per model, trained on that model's own activations of the lab
  web/chat mix at the same layer (cached in ``out_dir``), and the lab's held-out Cannot/Can and Harmful/Harmless sets
  (compositional questions the models never saw, each with ``meta["question_id"]``).
* Paper: Gemma-2-9b and Gemma-2-9b-it with Gemma Scope 16k SAEs at the output of layer 20, the Cannot/Can prompts
  of :func:`tiedlib.experiments.exp3.sources.cannot_can_texts` (question id: the request, shared by its two frames)
  and Arditi et al.'s train prompts (no question ids: each prompt is its own bootstrap cluster). Each model is loaded,
  read and freed in turn (each SAE reads one model), so only one 9B model is in memory at a time.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd
import torch

from tiedlib.experiments.exp3.overlap import (
    MODELS,
    POSITIONS,
    Clusters,
    SetSums,
    collect_tokens,
    load_sae,
    position_sums,
    question_counts,
    require_questions,
    sae_metrics,
    save_sae,
    train_sae,
)
from tiedlib.experiments.exp3.positions import chat_render, end_of_prompt_lengths, format_suffix, token_strings
from tiedlib.experiments.exp3.presets import Exp3Settings
from tiedlib.experiments.exp3.sources import (
    PAPER_MODELS,
    PAPER_SAES,
    cannot_can_question_ids,
    cannot_can_texts,
    load_arditi_prompts,
    load_hub_model,
    load_pretrained_sae,
    prompt_suffixes,
    tokenize_prompts,
)
from tiedlib.training.rundir import check_source, write_source


class Exp3Data(NamedTuple):
    """Everything the analysis needs, plus provenance."""

    sums: dict[str, dict[str, SetSums]]
    """Positions (:data:`~tiedlib.experiments.exp3.overlap.POSITIONS`: ``"all"``, ``"end"``) -> model -> prompt set ->
    ``(n_prompts, d_sae)`` per-prompt latent sums over those positions."""
    prompts: dict[str, list[str]]
    """Prompt set -> prompt texts (for display)."""
    question_ids: Clusters
    """Prompt set -> each prompt's question id (None: no id, the prompt is its own bootstrap cluster)."""
    end_tokens: dict[str, list[str]]
    """Prompt set -> the end-of-prompt tokens of its first prompt (what the ``"end"`` sums run over)."""
    sae_stats: dict[str, dict[str, float]]
    """Model -> SAE metrics on its training activations (lab) or its config facts (paper)."""
    layer: int
    """Decoder layer whose output was read."""
    description: str
    """One line saying which models and SAEs produced the numbers."""
    truth: dict[str, dict[str, float]] | None = None
    """Lab pairs: :func:`lab_ground_truth` of the SAE training mix (how harm and refusal co-occur per source)."""

    def prompt_counts(self) -> dict[str, int]:
        """Prompt set -> number of prompts."""
        return {name: len(texts) for name, texts in self.prompts.items()}

    def question_counts(self) -> dict[str, int]:
        """Prompt set -> number of distinct questions (the bootstrap's clusters)."""
        return question_counts(self.question_ids)

    def bootstrap_unit(self) -> str:
        """What the bootstrap resamples, in words: distinct questions, prompts, or (paper scale) a mix of both."""
        with_id = {k for k, ids in self.question_ids.items() if any(q is not None for q in ids)}
        if with_id == set(self.question_ids):
            return "distinct questions"
        if not with_id:
            return "prompts (no question ids)"
        return (f"distinct questions ({', '.join(sorted(with_id))}) and prompts "
                f"({', '.join(sorted(set(self.question_ids) - with_id))}: no question ids)")

    def sets_table(self) -> pd.DataFrame:
        """One row per prompt set: prompts, distinct questions and its end-of-prompt tokens."""
        q = self.question_counts()
        return pd.DataFrame({"prompts": self.prompt_counts(), "distinct questions": q,
                             "end-of-prompt tokens": {k: " ".join(repr(t) for t in v)
                                                      for k, v in self.end_tokens.items()}})

    def prompt_table(self, n: int = 3) -> pd.DataFrame:
        """The first ``n`` prompts of each set, one column per set."""
        return pd.DataFrame({name: texts[:n] for name, texts in self.prompts.items()})

    def sae_table(self, decimals: int = 3) -> pd.DataFrame:
        """One row per model: its SAE's metrics (lab: mse, fvu, l0, training tokens, d_sae; paper: d_sae)."""
        return pd.DataFrame(self.sae_stats).T.round(decimals)

    def truth_table(self, decimals: int = 3) -> pd.DataFrame | None:
        """One row per source of :attr:`truth` (lab pairs); None at paper scale, where there is no ground truth."""
        return pd.DataFrame(self.truth).T.round(decimals) if self.truth is not None else None


def run(settings: Exp3Settings, out_dir: str | Path, *, progress: bool = False) -> Exp3Data:
    """Run Experiment 3 at the scale of ``settings`` (see the module docstring); lab SAEs are cached in ``out_dir``."""
    if settings.pair == "paper":
        return run_paper(settings)
    return run_lab(settings, out_dir, progress=progress)


def run_lab(settings: Exp3Settings, out_dir: str | Path, *, progress: bool = False) -> Exp3Data:
    """Lab pair: train (or reload) one SAE per model on its own activations and read the lab's held-out prompt sets
    (raises ValueError when a set has fewer than ``settings.min_questions`` distinct questions)."""
    from tiedlib import lab
    from tiedlib.pairs import pair_fingerprint, wrap

    cfg = lab.LabConfig.from_name(settings.pair)
    lab.build(cfg, progress=progress)
    tok = lab.load_tokenizer(cfg)
    hf_models = dict(zip(MODELS, lab.load_models(cfg, device=settings.device), strict=True))
    layer = settings.layer if settings.layer is not None else cfg.model.default_layer - 1
    mix_docs = lab.crosscoder_mix(cfg, settings.n_mix_docs, settings.web_fraction)
    mix = [d.input_ids for d in mix_docs]
    sets = {**lab.cannot_can_prompts(cfg, settings.n_cannot, split="heldout"),
            **lab.harmful_harmless_prompts(cfg, settings.n_harmful, split="heldout")}
    question_ids = {k: [d.meta["question_id"] for d in v] for k, v in sets.items()}
    require_questions(question_ids, settings.min_questions)
    seqs = {k: [d.input_ids for d in v] for k, v in sets.items()}
    suffix = {"forum": format_suffix(lab_forum_render(cfg, tok)), "chat": format_suffix(chat_render(tok))}
    ends = {k: end_of_prompt_lengths(v, [suffix["forum" if k in ("cannot", "can") else "chat"]])
            for k, v in seqs.items()}
    out_dir = Path(out_dir)
    source = pair_fingerprint(settings.pair, layer, config=cfg)  # the lab hash: TIEDLIB_LAB_SEED changes it
    sums: dict[str, dict[str, SetSums]] = {pos: {} for pos in POSITIONS}
    stats = {}
    for name, hf in hf_models.items():
        model = wrap(hf, tok)
        acts = collect_tokens(model, mix, layer, batch_size=settings.harvest_batch_size)
        sae = _train_or_load(settings, acts, out_dir / f"sae_{name}", layer, source=source)
        stats[name] = {**sae_metrics(sae, acts), "n_train_tokens": acts.shape[0], "d_sae": sae.cfg.d_sae}
        by_set = {k: position_sums(model, sae, v, layer, ends[k], batch_size=settings.harvest_batch_size)
                  for k, v in seqs.items()}
        for pos in POSITIONS:
            sums[pos][name] = {k: getattr(s, pos) for k, s in by_set.items()}
    desc = (f"lab pair '{cfg.name}' (d_model {cfg.model.hidden_size}, {cfg.model.num_layers} layers), output of "
            f"layer {layer}, sae_lens StandardSAE with {stats['base']['d_sae']} latents per model")
    end_tokens = {k: token_strings(tok, v[0][len(v[0]) - ends[k][0]:]) for k, v in seqs.items()}
    return Exp3Data(sums, {k: [d.text for d in v] for k, v in sets.items()}, question_ids, end_tokens, stats, layer,
                    desc, lab_ground_truth(mix_docs))


def lab_forum_render(cfg: Any, tok: Any) -> Callable[[str], list[int]]:
    """The lab's forum-prompt format (:func:`tiedlib.lab.sets.cannot_can_prompts`: ``<bos>Posted by <name>\nQuestion:
    <question>\nAnswer:``) as a :func:`~tiedlib.experiments.exp3.positions.format_suffix` render, question -> ids."""
    from tiedlib.lab.docs import web_spans
    from tiedlib.lab.sets import forum_prompt_spans

    def render(question: str) -> list[int]:
        spans = web_spans(forum_prompt_spans(cfg, question, "yes", "Alice"))[:-1]  # no EOS, as in the prompt sets
        return tok("".join(t for t, _ in spans), add_special_tokens=False)["input_ids"]

    return render


def _train_or_load(settings: Exp3Settings, acts: torch.Tensor, folder: Path, layer: int, *,
                   source: str | None = None) -> Any:  # fmt: skip
    """Reload the SAE in ``folder`` if it was trained with the same settings, else train and save it.

    ``source`` (the lab pair's :func:`~tiedlib.pairs.pair_fingerprint`) is recorded next to the SAE
    (:func:`tiedlib.training.rundir.write_source`); an SAE trained on another pair that shares the name (e.g. another
    ``TIEDLIB_LAB_SEED``) raises ValueError instead of being reloaded, one without a record reloads with a warning.
    """

    keys = ("pair", "n_mix_docs", "web_fraction", "d_sae_multiple", "l1_coefficient", "train_samples",
            "sae_batch_size", "sae_lr", "seed")
    wanted = {**{k: asdict(settings)[k] for k in keys}, "layer": layer}
    marker = folder / "tiedlib_settings.json"
    if marker.exists() and json.loads(marker.read_text()) == wanted:
        check_source(folder, source)
        return load_sae(folder, device=settings.device)
    sae = train_sae(acts, d_sae=settings.d_sae_multiple * acts.shape[1], l1_coefficient=settings.l1_coefficient,
                    total_samples=settings.train_samples, batch_size=settings.sae_batch_size, lr=settings.sae_lr,
                    seed=settings.seed, device=settings.device)
    save_sae(sae, folder)
    if source is not None:
        write_source(folder, source)
    marker.write_text(json.dumps(wanted))
    return load_sae(folder, device=settings.device)


def run_paper(settings: Exp3Settings) -> Exp3Data:
    """Gemma-2-9b / -9b-it with Gemma Scope SAEs; raises SourceUnavailableError (fast) when an input is missing."""
    layer = settings.layer if settings.layer is not None else 20
    texts = {**cannot_can_texts(settings.n_cannot), **load_arditi_prompts("train", settings.n_harmful)}
    question_ids: Clusters = {**cannot_can_question_ids(settings.n_cannot),
                              **{k: [None] * len(texts[k]) for k in ("harmful", "harmless")}}
    saes = {m: load_pretrained_sae(*PAPER_SAES[m], device=settings.device) for m in MODELS}
    sums: dict[str, dict[str, SetSums]] = {pos: {} for pos in POSITIONS}
    stats, end_tokens = {}, {}
    for name in MODELS:
        model = load_hub_model(PAPER_MODELS[name], device=settings.device, dtype=getattr(torch, settings.dtype))
        chat = {k: k in ("harmful", "harmless") for k in texts}
        seqs = {k: tokenize_prompts(model.tokenizer, v, chat_template=chat[k]) for k, v in texts.items()}
        ends = {k: end_of_prompt_lengths(v, prompt_suffixes(model.tokenizer, chat_template=chat[k]))
                for k, v in seqs.items()}
        by_set = {k: position_sums(model, saes[name], v, layer, ends[k], batch_size=settings.harvest_batch_size)
                  for k, v in seqs.items()}
        for pos in POSITIONS:
            sums[pos][name] = {k: getattr(s, pos) for k, s in by_set.items()}
        end_tokens = {k: token_strings(model.tokenizer, v[0][len(v[0]) - ends[k][0]:]) for k, v in seqs.items()}
        stats[name] = {"d_sae": saes[name].cfg.d_sae}
        del model
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    desc = (f"Gemma-2-9b / Gemma-2-9b-it, output of layer {layer}, Gemma Scope 16k SAEs "
            f"({PAPER_SAES['base'][0]}, {PAPER_SAES['chat'][0]}: {PAPER_SAES['base'][1]})")
    return Exp3Data(sums, texts, question_ids, end_tokens, stats, layer, desc)


def lab_ground_truth(docs: list[Any]) -> dict[str, dict[str, float]]:
    """How strongly the lab corpus ties harmfulness to refusal in each source, at document level.

    Args:
        docs: :class:`tiedlib.lab.LabDoc` documents (e.g. the SAE training mix), grouped here by ``doc.source``.

    Returns:
        ``{source: {...}}`` with ``n_docs``, ``p_refused_if_harmful``, ``p_refused_if_not_harmful`` and ``phi`` (the
        correlation of the binary document flags ``meta["harmful"]`` and ``meta["refused"]``; NaN if one is constant).
    """
    from tiedlib.lab.stats import flag_correlation

    phi = flag_correlation(docs, "harmful", "refused")
    out = {}
    for source in sorted({d.source for d in docs}):
        group = [d for d in docs if d.source == source]
        h = torch.tensor([bool(d.meta.get("harmful")) for d in group], dtype=torch.float64)
        r = torch.tensor([bool(d.meta.get("refused")) for d in group], dtype=torch.float64)
        out[source] = {"n_docs": len(group), "p_refused_if_harmful": r[h == 1].mean().item(),
                       "p_refused_if_not_harmful": r[h == 0].mean().item(), "phi": phi[source]}
    return out

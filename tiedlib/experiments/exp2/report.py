"""The closing summary of Experiment 2, printed from the notebook's results."""

from __future__ import annotations

from .latents import CategoryColourLatents
from .presets import Exp2Settings
from .tied import TiedColourTriple
from .toy import HeldOutChoice


def summary(
    settings: Exp2Settings, *, layer: int, n_entries: int, choice: HeldOutChoice,
    no_swap_half_swap: CategoryColourLatents, base_half_swap: CategoryColourLatents, tied: TiedColourTriple, scale: str,
) -> str:
    """Five lines: the setup, the fine-tunes' colour choice, the two standard crosscoders and the tied one.

    Args:
        settings: the notebook's settings.
        layer: harvested layer.
        n_entries: crosscoder training entries (prefix + colour).
        choice: colour choice on held-out prefixes (needs ``"base"``, ``"no-swap"`` and ``"half-swap"``).
        no_swap_half_swap: blue/green latents of the (no-swap, half-swap) standard crosscoder.
        base_half_swap: those of the (base, half-swap) one, shared latents ranked (``shared=True``).
        tied: the tied crosscoder's blue/green triple.
        scale: the notebook's ``SCALE``.
    """
    toy, c, ns, b = settings.toy, choice.by_model, no_swap_half_swap, base_half_swap
    _, partner_cos = b.closest_shared()
    return "\n".join([
        f"Scale: {scale} (base model of the {toy.pair} pair, layer {layer}; {toy.n_finetune_per_colour} + "
        f"{toy.n_finetune_per_colour} fine-tuning prefixes, crosscoders on {n_entries} entries repeated to "
        f"{settings.train_tokens:,} tokens, {settings.n_latents} latents).",
        f"Fine-tuning: P(true colour) on held-out prefixes: base {c['base']['p_true']:.2f}, no-swap "
        f"{c['no-swap']['p_true']:.2f}, half-swap {c['half-swap']['p_true']:.2f} (other colour "
        f"{c['half-swap']['p_other']:.2f}).",
        f"({ns.names[0]}, {ns.names[1]}) standard crosscoder: {len(ns.categories.base_exclusive)} "
        f"{ns.names[0]}-exclusive and {len(ns.categories.chat_exclusive)} {ns.names[1]}-exclusive latents; blue/green "
        f"among them (both colours in the top {ns.top_k} logits): {len(ns.hits('base'))} and {len(ns.hits('chat'))}. "
        f"Best candidates {ns.best('base')} and {ns.best('chat')}: decoder cosine {ns.best_cosine():.3f} "
        "(write-up: 0.97).",
        f"({b.names[0]}, {b.names[1]}) standard crosscoder: blue/green {b.names[0]}-exclusive latents "
        f"{len(b.hits('base'))}, {b.names[1]}-exclusive {len(b.hits('chat'))}; the best {b.names[1]}-exclusive "
        f"candidate's closest shared latent is at cosine {partner_cos:.3f} (write-up: 0.91), blue/green itself: "
        f"{b.partner_is_colour()}.",
        f"Tied crosscoder on ({tied.names[0]}, {tied.names[1]}): blue/green on the {tied.names[0]} half at "
        f"{len(tied.hits_base)} indices, on the {tied.names[1]} half at {len(tied.hits_chat)}, on both at "
        f"{len(tied.both)}; one tied triple for blue/green: {tied.single_triple}.",
    ])

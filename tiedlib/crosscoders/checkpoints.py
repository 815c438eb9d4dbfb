"""Loading crosscoders from our own folders and from the two public releases; latents tied to their checkpoint.

Released layouts (REFERENCE.md), plain ``torch.save`` state dicts with keys ``W_enc, W_dec, b_enc, b_dec`` and a
JSON config beside them (the architecture is read off the shapes):

- standard, ``ckkissane/crosscoder-gemma-2-2b-model-diff``: ``blocks.14.hook_resid_pre/cc_weights.pt`` with
  ``blocks.14.hook_resid_pre/cfg.json`` in the same subfolder, ``W_enc (2, d, n)``;
- tied, ``sa7270/tied-crosscoder``: ``tied_crosscoder_eta_2.pt`` with ``tied_crosscoder_eta_2_cfg.json``,
  ``W_enc (2, d, 3, n)``. Its config may not record eta: it then loads with eta = 2, the value of the released run.

Neither release stores the normalisation factors its inputs were scaled by, so a released crosscoder loads with
``cfg.needs_norm_factors = True``: :meth:`~tiedlib.crosscoders.crosscoder.Crosscoder.normalize` (which every analysis
of raw activations goes through) refuses until factors are given (``load_crosscoder(..., norm_factors=...)``) or
set with :meth:`~tiedlib.crosscoders.crosscoder.Crosscoder.set_norm_factors_`, e.g. from
:func:`tiedlib.activations.estimate_norm_factors` on harvested activations.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch

from tiedlib.config import CrosscoderConfig
from tiedlib.crosscoders.crosscoder import CONFIG_NAME, PARAM_NAMES, WEIGHTS_NAME, Crosscoder, crosscoder_class

RELEASED_TIED_ETA = 2.0
"""eta of the released tied run (the write-up, Experiment 1)."""


class Release(NamedTuple):
    """Where a released checkpoint lives on the Hugging Face Hub."""

    subfolder: str | None
    weights: str
    config: str


RELEASES: dict[str, Release] = {
    "ckkissane/crosscoder-gemma-2-2b-model-diff": Release("blocks.14.hook_resid_pre", "cc_weights.pt", "cfg.json"),
    "sa7270/tied-crosscoder": Release(None, "tied_crosscoder_eta_2.pt", "tied_crosscoder_eta_2_cfg.json"),
}
"""The public crosscoders for Gemma-2-2b vs -2b-it, by Hub repository."""


def release_id(repo: str, release: Release) -> str:
    """``repo/[subfolder/]weights``: how a released checkpoint is named in :class:`LatentRef`."""
    return "/".join(p for p in (repo, release.subfolder, release.weights) if p)


def load_crosscoder(path: str | Path, *, device: str | torch.device = "cpu", eta: float | None = None,
                    subfolder: str | None = None, norm_factors: list[float] | None = None) -> Crosscoder:  # fmt: skip
    """Load a crosscoder from a tiedlib folder, a released checkpoint (file or folder), or a Hub repository.

    Args:
        path: a folder with ``config.json`` + ``model.safetensors``; a released ``.pt`` state dict with its config
            beside it (``<stem>_cfg.json``, or ``cfg.json`` as in the standard release's subfolder); a folder holding
            one such pair; or a Hub repo id (e.g. ``"ckkissane/crosscoder-gemma-2-2b-model-diff"``), downloaded
            with ``huggingface_hub.hf_hub_download`` (cached; ``HF_HUB_OFFLINE=1`` reads the cache only).
        device: where to put the weights.
        eta: override eta for a released tied checkpoint (default: its config's value, else 2).
        subfolder: for a Hub repo, the subfolder holding the checkpoint (default: the one :data:`RELEASES` names).
        norm_factors: the per-model factors (base, chat) a released checkpoint's inputs were scaled by.

    Raises:
        FileNotFoundError: nothing at ``path`` and no such Hub repo (or not cached, offline): the message says what
            to download.
        ValueError: files that are not a crosscoder checkpoint, or that disagree with their config.
    """
    local = Path(path)
    if not local.exists():
        if _looks_like_repo(str(path)):
            local = _download(str(path), subfolder)
        else:
            raise FileNotFoundError(
                f"no crosscoder at {path}. Released checkpoints load by Hub repo id, e.g. "
                f"load_crosscoder('sa7270/tied-crosscoder') or load_crosscoder("
                f"'ckkissane/crosscoder-gemma-2-2b-model-diff'), or from their downloaded files"
            )
    if local.is_dir() and (local / CONFIG_NAME).exists() and (local / WEIGHTS_NAME).exists():
        model = Crosscoder.from_pretrained(local, device=device)
        if norm_factors is not None:
            model.set_norm_factors_(norm_factors)
        return model
    if local.is_dir():
        pts = sorted(local.glob("*.pt"))
        if len(pts) != 1:
            raise ValueError(
                f"{local} is neither a tiedlib crosscoder folder ({CONFIG_NAME} + {WEIGHTS_NAME}) nor a folder with "
                f"exactly one released .pt checkpoint (found {len(pts)} .pt files)"
            )
        local = pts[0]
    if local.suffix != ".pt":
        raise ValueError(f"don't know how to load {local}: expected a tiedlib folder or a released .pt state dict")
    model = _load_released(local, eta=eta)
    if norm_factors is not None:
        model.set_norm_factors_(norm_factors)
    return model.to(device)


def _looks_like_repo(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "/", "~"))


def _download(repo: str, subfolder: str | None) -> Path:
    """Fetch a released checkpoint's weights and config; returns the local weights file."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError

    known = RELEASES.get(repo)
    if known is None:
        raise FileNotFoundError(
            f"{repo!r} is no local path and not one of the known releases {sorted(RELEASES)}; download its .pt and "
            "config files and pass the local path"
        )
    sub = subfolder if subfolder is not None else known.subfolder
    try:
        weights = hf_hub_download(repo, known.weights, subfolder=sub)
        hf_hub_download(repo, known.config, subfolder=sub)
    except (LocalEntryNotFoundError, EntryNotFoundError, RepositoryNotFoundError, OSError) as err:
        where = "/".join(p for p in (sub, known.weights) if p)
        raise FileNotFoundError(
            f"cannot fetch {where} and {known.config} from the Hub repo {repo} ({type(err).__name__}: {err}). "
            "They need network access to huggingface.co (HF_HUB_OFFLINE=1 reads only the local cache), or pass "
            "the path of files downloaded elsewhere"
        ) from err
    return Path(weights)


def _config_beside(path: Path) -> Path:
    """A released checkpoint's JSON config: ``<stem>_cfg.json`` (tied release), else ``cfg.json`` in the same folder
    (the standard release's ``blocks.14.hook_resid_pre/``)."""
    for candidate in (path.with_name(path.stem + "_cfg.json"), path.with_name("cfg.json")):
        if candidate.exists():
            return candidate
    raise FileNotFoundError(
        f"released checkpoint {path.name} needs its config beside it: {path.stem}_cfg.json or cfg.json in {path.parent}"
    )


def _release_of(path: Path) -> str | None:
    """The :func:`release_id` of a local released file, recognised by its file (and subfolder) name."""
    for repo, rel in RELEASES.items():
        if path.name == rel.weights and (rel.subfolder is None or path.parent.name == rel.subfolder):
            return release_id(repo, rel)
    return None


def _load_released(path: Path, *, eta: float | None) -> Crosscoder:
    cfg_path = _config_beside(path)
    released_cfg = json.loads(cfg_path.read_text())
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError) as err:
        raise ValueError(
            f"refusing to load {path}: it is not a plain tensor state dict loadable with weights_only=True ({err})"
        ) from err
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a dict of tensors")
    missing = [k for k in PARAM_NAMES if k not in state]
    if missing:
        raise ValueError(f"{path} lacks parameters {missing}; found keys {sorted(state)}")
    W_enc, W_dec = state["W_enc"], state["W_dec"]
    if W_dec.ndim != 3 or W_dec.shape[1] != 2:
        raise ValueError(f"{path}: W_dec must have shape (n, 2, d_model), got {tuple(W_dec.shape)}")
    n, _, d = W_dec.shape
    if W_enc.ndim == 3:
        architecture = "standard"
    elif W_enc.ndim == 4 and W_enc.shape[2] == 3:
        architecture = "tied"
    else:
        raise ValueError(f"{path}: W_enc shape {tuple(W_enc.shape)} is neither (2, d, n) nor (2, d, 3, n)")
    for key in ("d_in", "d_model"):
        if key in released_cfg and int(released_cfg[key]) != d:
            raise ValueError(f"{cfg_path.name} says {key}={released_cfg[key]} but the weights have d_model={d}")
    if "dict_size" in released_cfg and int(released_cfg["dict_size"]) != n:
        raise ValueError(f"{cfg_path.name} says dict_size={released_cfg['dict_size']} but the weights have {n} latents")
    if eta is None:
        eta = float(released_cfg.get("eta", RELEASED_TIED_ETA))
    cfg = CrosscoderConfig(
        d_model=d,
        n_latents=n,
        architecture=architecture,
        eta=eta,
        dec_init_norm=float(released_cfg.get("dec_init_norm", 0.08)),
        needs_norm_factors=True,  # the releases trained on normalised activations and stored no factors
    )
    model = crosscoder_class(architecture)(cfg)
    model.load_weights_({k: state[k].float() for k in PARAM_NAMES}, source=str(path))
    model.source = _release_of(path) or str(path)
    return model


# ---- latents chosen in one checkpoint --------------------------------------------------------------------------------
@torch.no_grad()
def weights_fingerprint(model: Crosscoder) -> str:
    """A short hash of a crosscoder's architecture, shapes and decoder weights (16 hex digits)."""
    h = hashlib.sha256(f"{model.architecture}:{tuple(model.W_enc.shape)}:{tuple(model.W_dec.shape)}".encode())
    h.update(model.W_dec.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class LatentRef:
    """A latent index together with the checkpoint it was chosen in (the write-up's triple 10615 means nothing in a
    crosscoder trained afresh).

    ``checkpoint`` is a released checkpoint's :func:`release_id` (``"sa7270/tied-crosscoder/tied_crosscoder_eta_2.pt"``)
    or a :func:`weights_fingerprint`.
    """

    index: int
    checkpoint: str

    def resolve(self, model: Crosscoder) -> int:
        """``index``, after checking that ``model`` is the checkpoint it belongs to.

        Raises:
            ValueError: ``model`` is another crosscoder (the message names both), or the index is out of range.
        """
        ids = {getattr(model, "source", None), weights_fingerprint(model)}
        if self.checkpoint not in ids:
            mine = getattr(model, "source", None) or "a crosscoder trained here"
            raise ValueError(
                f"latent {self.index} was chosen in checkpoint {self.checkpoint!r}, but this crosscoder is {mine} "
                f"(fingerprint {weights_fingerprint(model)}): its latent {self.index} is an unrelated feature. Load "
                f"that checkpoint, or choose the latent in this one"
            )
        if not 0 <= self.index < model.cfg.n_latents:
            raise ValueError(f"latent {self.index} is out of range for {model.cfg.n_latents} latents")
        return self.index


def resolve_latent(latent: LatentRef | int | None, model: Crosscoder) -> int | None:
    """A preset's latent for ``model``: a plain index (chosen in this very model) as is, a :class:`LatentRef` after
    its checkpoint check, None as None."""
    if isinstance(latent, LatentRef):
        return latent.resolve(model)
    return latent

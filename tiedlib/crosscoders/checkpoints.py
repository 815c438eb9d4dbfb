"""Loading crosscoders from our own folders and from the two public released layouts.

Released layouts (REFERENCE.md): a plain ``torch.save`` state dict ``<name>.pt`` with keys ``W_enc, W_dec, b_enc,
b_dec`` and a JSON config ``<name>_cfg.json`` beside it; ``sa7270/tied-crosscoder`` (tied, ``W_enc (2, d, 3, n)``) and
``ckkissane/crosscoder-gemma-2-2b-model-diff`` (standard, ``W_enc (2, d, n)``). The architecture is read off the
shapes. The tied run's config may not record eta: it then loads with eta = 2, the value of the released run.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import torch

from tiedlib.config import CrosscoderConfig
from tiedlib.crosscoders.crosscoder import CONFIG_NAME, PARAM_NAMES, WEIGHTS_NAME, Crosscoder, crosscoder_class

RELEASED_TIED_ETA = 2.0
"""eta of the released tied run (the write-up, Experiment 1)."""


def load_crosscoder(path: str | Path, *, device: str | torch.device = "cpu", eta: float | None = None) -> Crosscoder:
    """Load a crosscoder from a tiedlib folder, a released ``.pt`` file, or a folder holding one.

    Args:
        path: a folder with ``config.json`` + ``model.safetensors``; a ``.pt`` state dict with ``<stem>_cfg.json``
            beside it; or a folder holding exactly one such pair.
        device: where to put the weights.
        eta: override eta for a released tied checkpoint (default: its config's value, else 2).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"no crosscoder at {path}. For a released checkpoint on the Hub, download it first, e.g. "
            "huggingface_hub.hf_hub_download('sa7270/tied-crosscoder', 'tied_crosscoder_eta_2.pt') and its _cfg.json"
        )
    if path.is_dir() and (path / CONFIG_NAME).exists() and (path / WEIGHTS_NAME).exists():
        return Crosscoder.from_pretrained(path, device=device)
    if path.is_dir():
        pts = sorted(path.glob("*.pt"))
        if len(pts) != 1:
            raise ValueError(
                f"{path} is neither a tiedlib crosscoder folder ({CONFIG_NAME} + {WEIGHTS_NAME}) nor a folder with "
                f"exactly one released .pt checkpoint (found {len(pts)} .pt files)"
            )
        path = pts[0]
    if path.suffix != ".pt":
        raise ValueError(f"don't know how to load {path}: expected a tiedlib folder or a released .pt state dict")
    return _load_released(path, device=device, eta=eta)


def _load_released(path: Path, *, device, eta: float | None) -> Crosscoder:
    cfg_path = path.with_name(path.stem + "_cfg.json")
    if not cfg_path.exists():
        raise FileNotFoundError(f"released checkpoint {path.name} needs its config {cfg_path.name} beside it")
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
    )
    model = crosscoder_class(architecture)(cfg)
    model.load_weights_({k: state[k].float() for k in PARAM_NAMES}, source=str(path))
    return model.to(device)

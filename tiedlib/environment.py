"""What a notebook's install cell reports: the versions of tiedlib's main dependencies found in this Python, where
tiedlib is imported from, and a warning (never an error) when ``SCALE = "paper"`` has no CUDA GPU.

``pip install tiedlib`` keeps the torch, numpy, pandas and transformers an environment already has (Colab ships its
own; the package asks for compatible ranges, see requirements.txt), so the versions printed here are the ones a run
actually uses.
"""

from __future__ import annotations

import platform
import sys
import warnings
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from tiedlib.config import SCALES

#: Distributions whose versions the report prints, in this order.
MAIN_PACKAGES: tuple[str, ...] = ("tiedlib", "torch", "transformers", "nnsight", "sae-lens", "numpy", "pandas")
#: The scales that need a CUDA GPU (Gemma-2 models, paper-sized crosscoders).
GPU_SCALES: tuple[str, ...] = ("paper",)


class NoGPUWarning(UserWarning):
    """A scale that needs a CUDA GPU is about to run without one."""


@dataclass(frozen=True)
class Environment:
    """What :func:`inspect_environment` found."""

    python: str
    """The Python version, e.g. ``"3.11.7"``."""
    versions: dict[str, str | None]
    """Distribution name -> installed version, None where the distribution is not installed."""
    tiedlib_path: str
    """The folder tiedlib is imported from (site-packages when installed, the checkout in development)."""
    gpu: str | None
    """Name of CUDA device 0, or None when torch sees no CUDA GPU (or torch is missing)."""
    in_colab: bool
    """Whether this runs inside Google Colab."""

    def summary(self) -> str:
        """One line: Python, each main package's version (``missing`` where absent), the GPU, and whether tiedlib is
        an installed package or a source checkout (not its folder: executed pages are published)."""
        # tiedlib itself has no distribution metadata when it runs from a checkout: the last clause says which it is.
        found = ", ".join(f"{name} {version or 'missing'}" for name, version in self.versions.items()
                          if version or name != "tiedlib")
        gpu = f"GPU {self.gpu}" if self.gpu else "no CUDA GPU (CPU only)"
        where = " (Colab)" if self.in_colab else ""
        kind = "an installed package" if "-packages" in Path(self.tiedlib_path).parts[-2] else "a source checkout"
        return f"Python {self.python}{where}: {found}; {gpu}; tiedlib is {kind}"


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _cuda_device() -> str | None:
    try:
        import torch
    except ImportError:
        return None
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def inspect_environment(packages: tuple[str, ...] = MAIN_PACKAGES) -> Environment:
    """The versions of ``packages`` installed in this Python, tiedlib's folder and the CUDA GPU, if any.

    A tiedlib imported from a checkout without installation (``make``'s development venv) has no distribution
    metadata: its version reads None and ``tiedlib_path`` names the checkout.
    """
    return Environment(
        python=platform.python_version(),
        versions={name: _version(name) for name in packages},
        tiedlib_path=str(Path(__file__).resolve().parent),  # this module sits at the top of the package
        gpu=_cuda_device(),
        in_colab="google.colab" in sys.modules,
    )


def check(scale: str | None = None, *, show_versions: bool = True, env: Environment | None = None) -> Environment:
    """Print the versions found and warn, without failing, when ``scale`` needs a CUDA GPU that is missing.

    Args:
        scale: the notebook's ``SCALE`` (one of ``tiedlib.config.SCALES``), or None to only print the versions.
        show_versions: print :meth:`Environment.summary` (False when an earlier cell printed it already).
        env: the environment to judge; :func:`inspect_environment` by default (tests pass a made-up one).

    Returns:
        The environment that was judged.

    Raises:
        ValueError: ``scale`` is not one of ``SCALES``.

    Warns:
        NoGPUWarning: ``scale`` is in ``GPU_SCALES`` and ``env`` has no CUDA GPU. The run still starts; it is the
        researcher's call (e.g. to test the data pipeline on CPU).
    """
    if scale is not None and scale not in SCALES:
        raise ValueError(f"unknown SCALE {scale!r}; choose one of {list(SCALES)}")
    env = inspect_environment() if env is None else env
    if show_versions:
        print(env.summary())
    if scale in GPU_SCALES and env.gpu is None:
        hint = "Runtime > Change runtime type > a GPU" if env.in_colab else "a machine with a CUDA GPU"
        warnings.warn(
            f"SCALE = {scale!r} trains on Gemma-2 activations and needs a CUDA GPU, but torch "
            f"{env.versions.get('torch') or '(missing)'} sees none: the run will be very slow or run out of memory. "
            f"Use {hint}, or SCALE = 'tiny' for the offline lab pair on CPU.",
            NoGPUWarning,
            stacklevel=2,
        )
    return env


def quiet_notebook_logs() -> None:
    """Silence, process-wide, what would clutter an executed notebook: the in-memory batches' "starting epoch"
    warning (small scales repeat their training rows over several epochs) and Hugging Face's weight-loading bars.
    tiedlib's own progress bars (harvesting, training) are left on."""
    from transformers.utils import logging as hf_logging

    warnings.filterwarnings("ignore", message="InMemoryBatches: starting epoch")
    hf_logging.disable_progress_bar()

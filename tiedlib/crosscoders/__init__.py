"""Stage 3: the crosscoders: standard and tied models, their pure losses, variants and checkpoint loading."""

from tiedlib.crosscoders.checkpoints import LatentRef, load_crosscoder, resolve_latent, weights_fingerprint
from tiedlib.crosscoders.crosscoder import (
    Crosscoder,
    CrosscoderOutput,
    LossOutput,
    StandardCrosscoder,
    TiedCrosscoder,
    make_crosscoder,
)

__all__ = [
    "Crosscoder",
    "LatentRef",
    "CrosscoderOutput",
    "LossOutput",
    "StandardCrosscoder",
    "TiedCrosscoder",
    "load_crosscoder",
    "make_crosscoder",
    "resolve_latent",
    "weights_fingerprint",
]

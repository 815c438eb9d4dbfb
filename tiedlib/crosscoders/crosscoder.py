"""The standard crosscoder and the tied crosscoder.

Standard crosscoder (Anthropic's crosscoder; public replication on Gemma-2-2b vs -it), for ``x = [x_base, x_chat]``:
``f = ReLU(sum_m x_m W_enc[m] + b_enc)`` and ``x_hat[m] = f W_dec[:, m] + b_dec[m]``.

Tied crosscoder (the write-up, "Introduction"): latents come in triples (shared, base, chat) per index ``i``, each
read by its own encoder from both models, and one decoder pair per index:
``x_hat_base = (f_shared + f_base) W_dec[:, base] + b_dec[base]``,
``x_hat_chat = (f_shared + f_chat) W_dec[:, chat] + b_dec[chat]``.

Parameter names and shapes match the released checkpoints (REFERENCE.md): standard ``W_enc (2, d_model, n)``,
``b_enc (n)``; tied ``W_enc (2, d_model, 3, n)``, ``b_enc (3, n)``; both ``W_dec (n, 2, d_model)`` and
``b_dec (2, d_model)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import torch
from jaxtyping import Float
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from tiedlib.config import BASE, BASE_ONLY, CHAT, CHAT_ONLY, CrosscoderConfig
from tiedlib.crosscoders import losses, variants
from tiedlib.crosscoders.fused import ReluCrosscoderLoss, TiedDecode, compute_dtype

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
PARAM_NAMES = ("W_enc", "b_enc", "W_dec", "b_dec")


class CrosscoderOutput(NamedTuple):
    x_hat: Float[Tensor, "batch n_models d_model"]
    latents: Tensor
    """``(batch, n_latents)`` for the standard crosscoder, ``(batch, 3, n_latents)`` (shared, base, chat) for tied."""


class LossOutput(NamedTuple):
    """Loss terms and metrics of one batch. ``total`` carries the gradient; everything else is detached."""

    total: Tensor
    reconstruction: Tensor
    """Mean over the batch of ``sum_{m,d} (x_hat - x)^2``."""
    sparsity: Tensor
    """The (eta-weighted, for tied) decoder-norm-weighted L1 term, before multiplying by ``l1_coeff``."""
    l0: Tensor
    """Mean number of firing latents per token, all groups together."""
    explained_variance: Tensor
    explained_variance_base: Tensor
    explained_variance_chat: Tensor
    sparsity_shared: Tensor | None = None
    """Tied only: the shared group's term of ``sparsity``."""
    sparsity_exclusive: Tensor | None = None
    """Tied only: the base and chat groups' term of ``sparsity`` (eta included)."""
    l0_shared: Tensor | None = None
    l0_base: Tensor | None = None
    l0_chat: Tensor | None = None
    aux_k: Tensor | None = None
    """With ``cfg.aux_k`` in training: the auxiliary-k squared error (before ``aux_alpha``; included in ``total``)."""

    def scalars(self) -> dict[str, float]:
        """The terms that are set, as plain floats (for logging)."""
        return {k: float(v.detach()) for k, v in self._asdict().items() if v is not None}


@torch.no_grad()
def init_groups_(W_enc: Float[Tensor, "n_models d_model 3 n_latents"], how: str) -> None:
    """In place: give a tied encoder's exclusive groups a start distinct from the shared group's (issue 15; the
    ``group_init`` option of :class:`~tiedlib.config.CrosscoderConfig`). ``W_enc`` holds three copies of the
    decoder's transpose (the write-up's init). ``"one_sided"``: the base group keeps its reading of ``x_base`` and
    reads nothing of ``x_chat`` (the chat group the mirror image), so at step 0 an exclusive latent fires wherever its
    own model has the index's direction, whatever the other model does. ``"contrast"``:
    :func:`~tiedlib.crosscoders.variants.contrast_init_`. ``"copies"``: unchanged.

    Raises:
        ValueError: not a tied encoder, or an unknown ``how``.
    """
    if W_enc.ndim != 4 or W_enc.shape[0] != 2 or W_enc.shape[2] != 3:
        raise ValueError(f"expected a tied encoder (2, d_model, 3, n_latents), got {tuple(W_enc.shape)}")
    if how == "one_sided":
        W_enc[CHAT, :, BASE_ONLY] = 0.0
        W_enc[BASE, :, CHAT_ONLY] = 0.0
    elif how == "contrast":
        variants.contrast_init_(W_enc)
    elif how != "copies":
        raise ValueError(f"unknown group_init {how!r}; expected 'copies', 'one_sided' or 'contrast'")


class _Crosscoder(nn.Module):
    """What the two architectures share: decoding bias, decoder norms, loss bookkeeping and (de)serialisation."""

    architecture: str

    def __init__(self, cfg: CrosscoderConfig) -> None:
        super().__init__()
        if cfg.architecture != self.architecture:
            name = type(self).__name__
            raise ValueError(f"{name} needs architecture={self.architecture!r}, got {cfg.architecture!r}")
        self.cfg = cfg
        self.source: str | None = None
        """Where the weights were loaded from (a folder, a file, or a release's ``repo/file``), if loaded."""
        n, d = cfg.n_latents, cfg.d_model
        # Public replication's init: W_dec ~ N(0, 1) with every per-model row rescaled to dec_init_norm, and the
        # encoder set to the decoder's transpose (the tied encoder: the same transpose for each of its 3 groups).
        W_dec = torch.randn(n, 2, d)
        W_dec = W_dec / W_dec.norm(dim=-1, keepdim=True) * cfg.dec_init_norm
        variants.tie_designated_(W_dec, cfg.n_designated_shared)  # designated shared latents start with one vector
        self.W_dec = nn.Parameter(W_dec)
        self.b_dec = nn.Parameter(torch.zeros(2, d))
        W_enc = W_dec.permute(1, 2, 0).contiguous()  # (2, d, n)
        if cfg.n_groups > 1:
            W_enc = W_enc.unsqueeze(2).repeat(1, 1, cfg.n_groups, 1)  # (2, d, 3, n)
            self.b_enc = nn.Parameter(torch.zeros(cfg.n_groups, n))
        else:
            self.b_enc = nn.Parameter(torch.zeros(n))
        if cfg.group_init != "copies":
            init_groups_(W_enc, cfg.group_init)
        self.W_enc = nn.Parameter(W_enc)
        if cfg.activation == "batchtopk":
            # Running inference threshold of BatchTopK (-1: not estimated yet), one per group with k_groups. Saved
            # with the weights.
            self.register_buffer("threshold", torch.tensor(-1.0) if cfg.k_groups is None else torch.full((3,), -1.0))
        if cfg.aux_k:
            # Training tokens since each latent (all groups flattened) last fired: the auxiliary-k loss's dead
            # statistic, a buffer so that checkpoints and exact resume keep it.
            self.register_buffer("tokens_since_fired", torch.zeros(cfg.n_groups * n, dtype=torch.long))
        self.apply_constraints_()  # unit-norm decoders start at norm 1 (the encoder keeps the dec_init_norm scale)

    # ---- variants (issue 8) -------------------------------------------------------------------------------------
    @torch.no_grad()
    def apply_constraints_(self) -> None:
        """Re-impose the config's decoder constraints in place; :func:`tiedlib.training.train_step` calls this after
        every optimizer step. A no-op for the write-up's configuration (free norms, no designated latents)."""
        variants.project_decoder_(self.W_dec, self.cfg.decoder_norm)
        variants.tie_designated_(self.W_dec, self.cfg.n_designated_shared)

    def _sparsify(self, f: Float[Tensor, "batch n"]) -> Float[Tensor, "batch n"]:
        """BatchTopK over the flattened latents (identity for ReLU crosscoders).

        Training mode (``model.train()``, the default): keep the ``k * batch`` largest scores of the batch and, when
        gradients are on, update the running threshold. Eval mode: keep the scores above that threshold, or use the
        batch rule while no threshold has been estimated yet.
        """
        if self.cfg.activation != "batchtopk":
            return f
        # Score = activation x decoder weight (shared: ||d_base|| + ||d_chat||; base, chat: that model's norm).
        norms = self.decoder_norms()
        if self.cfg.n_groups == 3:
            weights = losses.tied_penalty_weights(norms, 1.0)
        else:
            weights = losses.standard_penalty_weights(norms)
        if self.cfg.k_groups is not None:  # one top-k and one threshold per group
            thrs = self.threshold.tolist()
            ready = all(t >= 0 for t, k in zip(thrs, self.cfg.k_groups, strict=True) if k > 0)
            use = not self.training and ready
            kept, mins = variants.batch_topk_groups(f, weights, self.cfg.k_groups, thrs if use else None)
            if self.training and torch.is_grad_enabled():
                new = [variants.update_threshold(t, m) for t, m in zip(thrs, mins, strict=True)]
                self.threshold.copy_(torch.tensor(new, dtype=self.threshold.dtype))
            return kept
        thr = float(self.threshold)
        use_threshold = not self.training and thr >= 0
        kept, batch_min = variants.batch_topk(f, weights.reshape(-1), self.cfg.k, thr if use_threshold else None)
        if self.training and torch.is_grad_enabled():
            self.threshold.fill_(variants.update_threshold(thr, batch_min))
        return kept

    def _aux_k_loss(self, x: Tensor, f: Tensor, x_hat: Tensor) -> Tensor:
        """The auxiliary-k term (Gao et al. 2024, arXiv 2406.04093, appendix A.2), before ``aux_alpha``.

        Updates the dead counter with this batch's latents ``f`` ``(batch, n_groups * n)``, then reconstructs the
        residual ``e = x - x_hat`` (detached) from each row's ``aux_k`` largest dead latents
        (:func:`~tiedlib.crosscoders.variants.aux_k_activations`), without the decoder bias: mean over the batch of
        ``sum_{m,d} (e_hat - e)^2``, the reconstruction loss's units. A dead base (chat) latent of a tied crosscoder
        writes into the base (chat) half of its decoder only; its shared group never counts as dead. Zero when no
        latent is dead.
        """
        counter = self.tokens_since_fired
        variants.update_dead_counter_(counter, f.detach())
        dead = counter >= self.cfg.dead_after_tokens
        n = self.cfg.n_latents
        if self.cfg.n_groups == 3:
            dead[:n] = False
        idx = dead.nonzero().squeeze(1)
        if idx.numel() == 0:
            return x.new_zeros(())
        batch = x.shape[0]
        w = self.W_enc.reshape(2 * self.cfg.d_model, -1)[:, idx]
        pre = torch.addmm(self.b_enc.reshape(-1)[idx], x.reshape(batch, -1).to(w.dtype), w)  # (batch, n_dead)
        acts, _ = variants.aux_k_activations(pre, self.cfg.aux_k)
        rows = self.W_dec[idx % n]  # (n_dead, 2, d)
        if self.cfg.n_groups == 3:  # group 1 (base) writes into model 0, group 2 (chat) into model 1
            only = torch.nn.functional.one_hot(idx // n - 1, 2).to(rows.dtype)  # (n_dead, 2)
            rows = rows * only[:, :, None]
        e_hat = torch.einsum("bk,kmd->bmd", acts.to(rows.dtype), rows)
        e = (x - x_hat).detach()
        return (e_hat.to(e.dtype) - e).pow(2).sum() / batch

    # ---- shapes -------------------------------------------------------------------------------------------------
    def _check_input(self, x: Tensor) -> None:
        expected = (2, self.cfg.d_model)
        if x.ndim != 3 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"expected activations of shape (batch, 2, {self.cfg.d_model}) = (batch, n_models, d_model), "
                f"got {tuple(x.shape)}"
            )

    def _pre_activations(self, x: Float[Tensor, "batch n_models d_model"]) -> Tensor:
        """``sum_m x_m W_enc[m] + b_enc`` as one matrix product over the flattened (n_models, d_model) axis."""
        self._check_input(x)
        batch = x.shape[0]
        w = self.W_enc.reshape(2 * self.cfg.d_model, -1)
        return torch.addmm(self.b_enc.reshape(-1), x.reshape(batch, -1).to(w.dtype), w)

    # ---- API ----------------------------------------------------------------------------------------------------
    def forward(self, x: Float[Tensor, "batch n_models d_model"]) -> CrosscoderOutput:
        f = self.encode(x)
        return CrosscoderOutput(self.decode(f), f)

    def encode(self, x: Float[Tensor, "batch n_models d_model"]) -> Tensor:  # pragma: no cover - overridden
        raise NotImplementedError

    def decode(self, f: Tensor) -> Float[Tensor, "batch n_models d_model"]:  # pragma: no cover - overridden
        raise NotImplementedError

    def decoder_norms(self) -> Float[Tensor, "n_latents n_models"]:
        return losses.decoder_norms(self.W_dec)

    @torch.no_grad()
    def relative_decoder_norm(self) -> Float[Tensor, " n_latents"]:
        """``r_i = ||W_dec[i, chat]|| / (||W_dec[i, base]|| + ||W_dec[i, chat]||)`` (REFERENCE.md).

        Base-exclusive ``r < 0.3``, shared ``0.3 <= r <= 0.7``, chat-exclusive ``r > 0.7`` (the write-up's thresholds).
        """
        norms = self.decoder_norms()
        return norms[:, CHAT] / norms.sum(dim=-1).clamp_min(torch.finfo(norms.dtype).tiny)

    def normalize(self, x: Float[Tensor, "batch n_models d_model"]) -> Float[Tensor, "batch n_models d_model"]:
        """Scale raw activations by the stored per-model normalisation factors (identity when there are none).

        Raises:
            ValueError: the crosscoder was trained on normalised activations but its factors are unknown (a public
                release); see :meth:`set_norm_factors_`.
        """
        self._require_factors("analyse raw activations")
        if self.cfg.norm_factors is None:
            return x
        factors = torch.tensor(self.cfg.norm_factors, dtype=x.dtype, device=x.device)
        return x * factors[None, :, None]

    def _require_factors(self, what: str) -> None:
        if self.cfg.needs_norm_factors and self.cfg.norm_factors is None:
            raise ValueError(
                f"cannot {what}: this crosscoder ({self.source or 'a released checkpoint'}) was trained on normalised "
                "activations, and its checkpoint does not store the normalisation factors (the public releases do "
                "not). Pass norm_factors=[base, chat] to load_crosscoder, or call set_norm_factors_ with an estimate "
                "(tiedlib.estimate_norm_factors on harvested activations)"
            )

    def set_norm_factors_(self, factors: Sequence[float] | Tensor) -> None:
        """Record the per-model factors (base, chat) the training inputs were scaled by; :meth:`normalize` then
        applies them to raw activations.

        Raises:
            ValueError: not two positive numbers.
        """
        values = [float(v) for v in (factors.tolist() if isinstance(factors, Tensor) else factors)]
        self.cfg = CrosscoderConfig.from_dict({**self.cfg.to_dict(), "norm_factors": values})

    def _penalty_weights(self, norms: Tensor) -> Tensor:  # pragma: no cover - overridden
        raise NotImplementedError

    def _grouped(self, f: Tensor) -> Tensor:
        """Latents as ``(batch, n_groups, n_latents)``."""
        return f.reshape(f.shape[0], self.cfg.n_groups, self.cfg.n_latents)

    def _latents_reconstruction_sparsity(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Latents ``(batch, n_groups * n)``, reconstruction ``(batch, 2, d)`` and per-group weighted L1 ``(G,)``.

        ReLU crosscoders take one fused autograd node (:class:`~tiedlib.crosscoders.fused.ReluCrosscoderLoss`);
        BatchTopK goes through :meth:`encode` / :meth:`decode` and plain autograd.
        """
        if self.cfg.activation == "relu":
            self._check_input(x)
            W_enc = self.W_enc.reshape(2 * self.cfg.d_model, -1)
            f, x_hat, per_group = ReluCrosscoderLoss.apply(
                x.reshape(x.shape[0], -1), W_enc, self.b_enc.reshape(-1), self.W_dec, self.b_dec,
                self._penalty_weights, compute_dtype(x, W_enc),
            )
            return f, x_hat, per_group
        weights = self._penalty_weights(self.decoder_norms())
        f = self.encode(x)
        return f.reshape(x.shape[0], -1), self.decode(f), losses.weighted_sparsity(self._grouped(f), weights)

    def loss(self, x: Float[Tensor, "batch n_models d_model"], l1_coeff: float, *, metrics: bool = True) -> LossOutput:
        """Reconstruction + ``l1_coeff`` x decoder-norm-weighted L1, with the metrics the trainer logs.

        With ``cfg.aux_k``, in training mode with gradients on, ``total`` also has ``aux_alpha`` x the auxiliary-k
        term (:meth:`_aux_k_loss`, which also advances the dead counter); eval mode and ``no_grad`` leave it out.

        ``metrics=False`` skips the L0 and explained-variance passes over the batch (the trainer's non-logging
        steps); those fields are then NaN. The loss terms are computed either way. Inside ``torch.autocast`` the
        matrix products and latents use the autocast dtype; the loss terms are fp32.
        """
        f, x_hat, per_group = self._latents_reconstruction_sparsity(x)
        x_hat = x_hat.to(x.dtype)
        batch = x.shape[0]
        se = losses.squared_error_per_model(x, x_hat)
        reconstruction = se.sum() / batch
        fg = self._grouped(f)
        sparsity = per_group.sum()
        total = reconstruction + l1_coeff * sparsity
        aux = None
        if self.cfg.aux_k and self.training and torch.is_grad_enabled():
            aux = self._aux_k_loss(x, f, x_hat)
            total = total + self.cfg.aux_alpha * aux
        if metrics:
            ev = losses.explained_variance_per_model(x, se.detach())
            with torch.no_grad():
                total_var = (x - x.mean(dim=0, keepdim=True)).pow(2).sum()
                ev_all = 1 - se.sum() / total_var.clamp_min(torch.finfo(x.dtype).tiny)
                l0 = losses.l0_per_group(fg)
        else:
            nan = torch.tensor(float("nan"), device=x.device)
            ev, ev_all, l0 = nan.expand(2), nan, nan.expand(self.cfg.n_groups)
        extra = {}
        if self.cfg.n_groups == 3:
            extra = dict(
                sparsity_shared=per_group[0].detach(),
                sparsity_exclusive=per_group[1:].sum().detach(),
                l0_shared=l0[0],
                l0_base=l0[1],
                l0_chat=l0[2],
            )
        return LossOutput(
            total=total,
            reconstruction=reconstruction.detach(),
            sparsity=sparsity.detach(),
            l0=l0.sum(),
            explained_variance=ev_all,
            explained_variance_base=ev[BASE],
            explained_variance_chat=ev[CHAT],
            aux_k=None if aux is None else aux.detach(),
            **extra,
        )

    # ---- normalisation folding ----------------------------------------------------------------------------------
    @torch.no_grad()
    def fold_normalization(self) -> "_Crosscoder":
        """A copy that reads and reconstructs *raw* activations (REFERENCE.md "Normalisation").

        With inputs scaled by ``s_m`` in training, ``W_enc[m] *= s_m``, ``W_dec[:, m] /= s_m`` and ``b_dec[m] /= s_m``
        (the public code folded the factors into the encoder only, leaving reconstructions in normalised units).
        The copy has ``norm_factors=None``. Its sparsity penalty is in raw units, so fold for analysis, not training.
        """
        self._require_factors("fold the normalisation factors")
        if self.cfg.norm_factors is None:
            raise ValueError("this crosscoder has no normalisation factors to fold (cfg.norm_factors is None)")
        s = torch.tensor(self.cfg.norm_factors, dtype=self.W_dec.dtype, device=self.W_dec.device)
        cfg = CrosscoderConfig.from_dict({**self.cfg.to_dict(), "norm_factors": None})
        folded = type(self)(cfg).to(self.W_dec.device)
        enc_shape = (2,) + (1,) * (self.W_enc.ndim - 1)
        folded.W_enc.copy_(self.W_enc * s.reshape(enc_shape))
        folded.b_enc.copy_(self.b_enc)
        folded.W_dec.copy_(self.W_dec / s[None, :, None])
        folded.b_dec.copy_(self.b_dec / s[:, None])
        return folded

    # ---- persistence --------------------------------------------------------------------------------------------
    def save_pretrained(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write ``model.safetensors`` and ``config.json`` into the folder ``path``.

        Refuses to replace an existing ``model.safetensors`` unless ``overwrite=True``.
        """
        path = Path(path)
        weights = path / WEIGHTS_NAME
        if weights.exists() and not overwrite:
            raise FileExistsError(f"{weights} already exists; pass overwrite=True to replace it")
        path.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        tmp = path / (WEIGHTS_NAME + ".tmp")
        save_file(tensors, str(tmp), metadata={"architecture": self.architecture})
        self.cfg.save_json(path / CONFIG_NAME)
        tmp.replace(weights)  # config first, weights last and atomically: a complete weights file implies a config
        return path

    @classmethod
    def from_pretrained(cls, path: str | Path, *, device: str | torch.device = "cpu") -> "_Crosscoder":
        """Load a folder written by :meth:`save_pretrained` (config first, then weights)."""
        path = Path(path)
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            if not (path / name).is_file():
                raise FileNotFoundError(f"no {name} in {path}: not a tiedlib crosscoder folder")
        cfg = CrosscoderConfig.load_json(path / CONFIG_NAME)
        model_cls = crosscoder_class(cfg.architecture, cfg.shared_penalty)
        if cls is not _Crosscoder and not issubclass(model_cls, cls):
            raise ValueError(f"{path} holds a {cfg.architecture} crosscoder, not a {cls.architecture} one")
        model = model_cls(cfg)
        model.load_weights_(load_file(str(path / WEIGHTS_NAME)), source=str(path))
        model.source = str(path)
        return model.to(device)

    @torch.no_grad()
    def load_weights_(self, state: dict[str, Tensor], *, source: str = "state dict") -> None:
        """Copy ``W_enc, b_enc, W_dec, b_dec`` in (and the BatchTopK ``threshold`` and auxiliary-k
        ``tokens_since_fired`` buffers of crosscoders that have them),
        checking names and shapes with errors that say what differs."""
        names = list(self.state_dict())
        missing = [k for k in names if k not in state]
        unexpected = sorted(set(state) - set(names))
        if missing or unexpected:
            raise ValueError(f"{source}: missing parameters {missing}, unexpected {unexpected}")
        for name in names:
            param = getattr(self, name)
            if tuple(state[name].shape) != tuple(param.shape):
                raise ValueError(
                    f"{source}: {name} has shape {tuple(state[name].shape)}, expected {tuple(param.shape)} "
                    f"for a {self.architecture} crosscoder with d_model={self.cfg.d_model}, "
                    f"n_latents={self.cfg.n_latents}"
                )
            param.copy_(state[name])

    def push_to_hub(self, repo_id: str, *, private: bool = False, token: str | None = None) -> str:
        """Upload ``model.safetensors`` + ``config.json`` to a Hugging Face Hub model repo; returns its URL."""
        import tempfile

        from huggingface_hub import HfApi

        api = HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            self.save_pretrained(tmp)
            api.upload_folder(repo_id=repo_id, folder_path=tmp)
        return f"https://huggingface.co/{repo_id}"


class StandardCrosscoder(_Crosscoder):
    """One latent per index; ``encode`` returns ``(batch, n_latents)``."""

    architecture = "standard"

    def encode(self, x: Float[Tensor, "batch n_models d_model"]) -> Float[Tensor, "batch n_latents"]:
        return self._sparsify(torch.relu_(self._pre_activations(x)))

    def decode(self, f: Float[Tensor, "batch n_latents"]) -> Float[Tensor, "batch n_models d_model"]:
        if f.ndim != 2 or f.shape[1] != self.cfg.n_latents:
            raise ValueError(f"expected latents of shape (batch, {self.cfg.n_latents}), got {tuple(f.shape)}")
        n, d = self.cfg.n_latents, self.cfg.d_model
        out = torch.addmm(self.b_dec.reshape(-1), f, self.W_dec.reshape(n, 2 * d))
        return out.reshape(f.shape[0], 2, d)

    def _penalty_weights(self, norms: Tensor) -> Tensor:
        return losses.standard_penalty_weights(norms, self.cfg.n_designated_shared, self.cfg.designated_shared_penalty)


class TiedCrosscoder(_Crosscoder):
    """Latent triples (shared, base, chat) over one decoder pair; ``encode`` returns ``(batch, 3, n_latents)``."""

    architecture = "tied"

    def encode(self, x: Float[Tensor, "batch n_models d_model"]) -> Float[Tensor, "batch 3 n_latents"]:
        return self._sparsify(torch.relu_(self._pre_activations(x))).reshape(x.shape[0], 3, self.cfg.n_latents)

    def decode(self, f: Float[Tensor, "batch 3 n_latents"]) -> Float[Tensor, "batch n_models d_model"]:
        if f.ndim != 3 or tuple(f.shape[1:]) != (3, self.cfg.n_latents):
            raise ValueError(f"expected latents of shape (batch, 3, {self.cfg.n_latents}), got {tuple(f.shape)}")
        return TiedDecode.apply(f, self.W_dec, self.b_dec)

    def _penalty_weights(self, norms: Tensor) -> Tensor:
        return losses.tied_penalty_weights(norms, self.cfg.eta, self.cfg.shared_penalty)


class WrittenTiedCrosscoder(TiedCrosscoder):
    """The write-up's tied crosscoder (groups, decoder, init) trained with issue 15's written-disagreement penalty
    (:func:`~tiedlib.crosscoders.losses.written_disagreement_penalty`, ``cfg.eta`` its disagreement charge) instead
    of the write-up's per-group weights; plain autograd, no fused kernel.

    Only training differs: encode and decode are the tied crosscoder's. Its config records
    ``shared_penalty="written"``, so :func:`make_crosscoder`, loading a saved folder and
    :func:`tiedlib.training.resume` all rebuild this class (and the CLI selects it with ``--shared-penalty written``).
    """

    def _latents_reconstruction_sparsity(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        f = self.encode(x)
        penalty = losses.written_disagreement_penalty(f, self.decoder_norms(), self.cfg.eta)
        # One term for the whole triple, reported as the shared group's (the exclusive groups' terms are zero).
        zero = penalty.new_zeros(())
        return f.reshape(x.shape[0], -1), self.decode(f), torch.stack([penalty, zero, zero])


RECOMMENDED_TIED_ETA = 1.5
"""eta of :func:`recommended_tied` (the disagreement charge of its penalty)."""


def recommended_tied_config(d_model: int, n_latents: int, **overrides) -> CrosscoderConfig:
    """The config of :func:`recommended_tied` (``n_latents`` triples, written-disagreement penalty at
    :data:`RECOMMENDED_TIED_ETA`), without building the model; ``overrides`` replace config fields."""
    fields = {"architecture": "tied", "eta": RECOMMENDED_TIED_ETA, "shared_penalty": "written", **overrides}
    return CrosscoderConfig(d_model=d_model, n_latents=n_latents, **fields)


def recommended_tied(d_model: int, n_latents: int, **overrides) -> WrittenTiedCrosscoder:
    """Issue 15's recommended tied configuration: the write-up's tied crosscoder (``n_latents`` triples, free decoder
    norms, the published init) trained with the written-disagreement penalty at eta 1.5.

    Picked from the whole robustness grid of :mod:`tiedlib.synthetic.grid` (``make bench``: 12 settings, 3 seeds
    each), not from one setting; notebook 05 shows the grid and the limits. ``overrides`` replace config fields.
    The same configuration from the command line: ``--architecture tied --shared-penalty written --eta 1.5``.
    """
    return WrittenTiedCrosscoder(recommended_tied_config(d_model, n_latents, **overrides))


Crosscoder = _Crosscoder
"""Common base class of :class:`StandardCrosscoder` and :class:`TiedCrosscoder` (for type hints and loading)."""


def crosscoder_class(architecture: str, shared_penalty: str = "sum") -> type[_Crosscoder]:
    """The class of a crosscoder config: ``architecture``, and for tied ones ``shared_penalty="written"`` selects
    :class:`WrittenTiedCrosscoder`."""
    classes = {"standard": StandardCrosscoder, "tied": TiedCrosscoder}
    if architecture not in classes:
        raise ValueError(f"unknown crosscoder architecture {architecture!r}; expected one of {sorted(classes)}")
    if architecture == "tied" and shared_penalty == "written":
        return WrittenTiedCrosscoder
    return classes[architecture]


def make_crosscoder(cfg: CrosscoderConfig) -> _Crosscoder:
    """Build the crosscoder that ``cfg`` describes (``architecture`` and, for tied, ``shared_penalty``)."""
    return crosscoder_class(cfg.architecture, cfg.shared_penalty)(cfg)

"""Builders with tiny defaults for tests (d_model=16, 64 latents, CPU, float32)."""

from __future__ import annotations

import os
import signal

import torch

from tiedlib import CrosscoderConfig, TrainConfig, make_crosscoder


def make_cfg(**overrides) -> CrosscoderConfig:
    kwargs = dict(d_model=16, n_latents=64, architecture="standard")
    kwargs.update(overrides)
    return CrosscoderConfig(**kwargs)


def make_model(**overrides):
    return make_crosscoder(make_cfg(**overrides))


def make_train_cfg(**overrides) -> TrainConfig:
    kwargs = dict(n_steps=20, lr=1e-3, log_every=5, progress=False)
    kwargs.update(overrides)
    return TrainConfig(**kwargs)


def random_rows(n: int = 512, d_model: int = 16, seed: int = 0) -> torch.Tensor:
    """Correlated paired activations: a shared random code seen by both models plus model-specific noise."""
    gen = torch.Generator().manual_seed(seed)
    codes = torch.relu(torch.randn(n, 32, generator=gen) - 1.0)
    dirs = torch.randn(32, 2, d_model, generator=gen)
    return torch.einsum("nk,kmd->nmd", codes, dirs) + 0.05 * torch.randn(n, 2, d_model, generator=gen)


class Interrupt(KeyboardInterrupt):
    """Stands for Ctrl-C or SIGTERM arriving at a chosen point (see :func:`interrupt_on_call`)."""


def interrupt_on_call(monkeypatch, owner, name: str, k: int, exc: type[BaseException] = Interrupt) -> None:
    """Make ``owner.name`` raise ``exc`` on its ``k``-th call (counted from 1), e.g.
    ``interrupt_on_call(monkeypatch, tiedlib.activations.harvest, "_trace_layer_input", 3)`` interrupts the buffer
    inside its second harvest batch, after the base model ran (odd calls are base models, even calls chat models)."""
    original = getattr(owner, name)
    calls = {"n": 0}

    def wrapped(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == k:
            raise exc(f"interrupt at call {k} of {name}")
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapped)


def count_calls(monkeypatch, owner, name: str, counts: dict[str, int]) -> None:
    """Count the calls of ``owner.name`` in ``counts[name]`` (to enumerate the points :func:`interrupt_on_call` can
    hit)."""
    original = getattr(owner, name)
    counts[name] = 0

    def wrapped(*args, **kwargs):
        counts[name] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapped)


def peak_cpu_bytes(fn) -> int:
    """Peak of the CPU bytes allocated (net of frees) while ``fn`` runs, from the torch profiler's allocator events.

    Frees of blocks allocated before ``fn`` are not reported, so this can only overestimate the peak."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())  # fmt: skip
    current = peak = 0
    for e in events:
        current += e.nbytes()
        peak = max(peak, current)
    return peak


class SigtermAt:
    """Wraps a data source and sends this process SIGTERM when batch number ``at`` (1-based) is requested; other
    attributes (``state_dict``, ``load_state_dict``, ``norm_factors``, ``rank``, ...) are the wrapped source's."""

    def __init__(self, data, at: int):
        self.data, self.at, self.requested = data, at, 0

    def __iter__(self):
        return self

    def __next__(self):
        self.requested += 1
        if self.requested == self.at:
            os.kill(os.getpid(), signal.SIGTERM)
        return next(self.data)

    def __getattr__(self, name):
        return getattr(self.data, name)

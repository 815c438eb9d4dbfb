"""The memory figures of ``tiedlib.training.memory`` (used by ``--dry-run``) against real training steps, measured
with the torch profiler's allocator events on CPU at reduced sizes."""

from __future__ import annotations

import gc
import json

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from tests.helpers import make_cfg, make_train_cfg
from tiedlib import make_crosscoder
from tiedlib.training import make_optimizer, train_step
from tiedlib.training.memory import crosscoder_n_params, step_transient_nbytes, train_state_nbytes


def peak_allocated(fn, trace_file) -> int:
    """Peak of the bytes allocated net of frees while ``fn`` runs: the running sum of the profiler's per-allocation
    ``[memory]`` records in time order, counting only frees of blocks allocated while ``fn`` ran (a block allocated
    before, e.g. by an earlier test, and freed now would otherwise lower the figure)."""
    gc.collect()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    prof.export_chrome_trace(str(trace_file))
    events = [e for e in json.loads(trace_file.read_text())["traceEvents"] if e.get("name") == "[memory]"]
    live: dict[int, int] = {}
    current = peak = 0
    for e in sorted(events, key=lambda e: e["ts"]):
        nbytes, addr = e["args"]["Bytes"], e["args"]["Addr"]
        if nbytes > 0:
            live[addr] = live.get(addr, 0) + nbytes
            current += nbytes
        elif addr in live:
            current -= live.pop(addr)
        peak = max(peak, current)
    return peak


@pytest.mark.parametrize("arch", ["standard", "tied"])
@pytest.mark.parametrize("bf16", [False, True])
def test_a_steps_peak_is_within_the_estimate(arch, bf16, tmp_path):
    cfg = make_cfg(architecture=arch, d_model=96, n_latents=1024)
    model = make_crosscoder(cfg)
    assert sum(p.numel() for p in model.parameters()) == crosscoder_n_params(cfg)
    opt, _ = make_optimizer(model, make_train_cfg())
    x = torch.randn(512, 2, 96)
    train_step(model, opt, x, l1_coeff=1.0, bf16=bf16)  # Adam state and gradients exist from now on
    measured = peak_allocated(lambda: train_step(model, opt, x, l1_coeff=1.0, metrics=False, bf16=bf16),
                              tmp_path / "trace.json")
    grads = 4 * crosscoder_n_params(cfg)  # the step allocates fresh gradients (the old ones are freed unseen)
    estimate = step_transient_nbytes(cfg, 512, bf16=bf16) + grads
    assert measured <= estimate, (measured, estimate)
    assert estimate <= 1.3 * measured, (measured, estimate)  # and not a loose bound
    state = train_state_nbytes(cfg)
    assert state == 4 * 4 * crosscoder_n_params(cfg)
    held = sum(t.numel() * t.element_size() for t in (*model.parameters(), *(p.grad for p in model.parameters())))
    held += sum(v.numel() * v.element_size() for s in opt.state.values() for k, v in s.items() if k != "step")
    assert held == state

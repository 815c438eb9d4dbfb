"""benchmarks/bench_gpu.py: a clear error without CUDA, and its whole code path at toy sizes on CPU."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_gpu.py"


def _module():
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_without_cuda_it_stops_at_once_saying_so():
    done = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "bench_gpu.py needs a CUDA GPU: torch" in done.stderr and "sees none" in done.stderr
    assert "Traceback" not in done.stderr


def test_toy_sizes_run_the_same_code_on_cpu(capsys):
    _module().main(["--device", "cpu", "--tiny", "--layers", "2", "--layer", "1", "--seq", "32", "--model-batch",
                    "4", "--batch", "64", "--n-latents", "128", "--buffer-tokens", "256", "--steps", "2",
                    "--e2e-steps", "8"])  # fmt: skip
    out = capsys.readouterr().out
    for line in ("harvest:", "step tied fp32:", "step tied tf32:", "step tied bf16:", "step standard tf32:",
                 "end to end, tied:", "end to end, tied + standard on one stream:"):  # fmt: skip
        assert line in out, line
    assert "tokens in" in out and " h" in out

"""What a training run sets up around its loop: graceful SIGINT/SIGTERM handling and the TF32 switch."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

import torch


class StopSignals:
    """While active (main thread only): the first SIGINT/SIGTERM asks the loop to stop after the current step; a
    second one raises KeyboardInterrupt at once."""

    SIGNALS = ("SIGINT", "SIGTERM")

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.requested is not None:
            raise KeyboardInterrupt(f"second {name}: stopping at once")
        self.requested = name
        print(f"\n{name} received: finishing this step, writing a checkpoint, then stopping "
              f"(send it again to stop at once)", file=sys.stderr, flush=True)  # fmt: skip

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for name in self.SIGNALS:
                signum = getattr(signal, name, None)
                if signum is not None:
                    self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def tf32(enabled: bool, devices: Sequence[str]):
    """Allow TF32 matrix products on CUDA for the duration (restored after); CPU products are never changed."""
    if not any(str(d).startswith("cuda") for d in devices):
        yield
        return
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before

"""Stopping a run cleanly on SIGINT or SIGTERM: finish the current step, checkpoint it, stop.

The first signal only sets a flag that the loop reads between steps; a second one interrupts at once
(KeyboardInterrupt), which can at worst leave a hidden partial checkpoint that resume ignores.
"""

from __future__ import annotations

import signal
import threading


class TrainingStopped(Exception):
    """The run stopped on a signal after checkpointing its last complete step."""

    def __init__(self, signal_name: str, step: int, checkpoint: str):
        super().__init__(f"stopped by {signal_name} at step {step}; checkpoint {checkpoint} "
                         f"(continue with --resume)")
        self.signal_name, self.step, self.checkpoint = signal_name, step, checkpoint


class StopFlag:
    """Context manager: while inside, SIGINT and SIGTERM set `.signal_name` instead of killing the process."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signal_name: str | None = None
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        if self.signal_name is not None:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name

    def __enter__(self) -> "StopFlag":
        # Handlers can only be installed from the main thread (a notebook's worker thread just goes without).
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)

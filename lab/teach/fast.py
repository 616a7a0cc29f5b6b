"""The notebooks' two switches, read from the environment.

`LAB_FAST=1` shrinks every notebook (fewer steps, smaller data) so that CI can execute all of them in
minutes on a 2-core CPU; the lessons stay the same, only the curves get shorter. `LAB_PROGRESS=0` (set
by `lab.notebooks` when it executes notebooks headless, and implied by `CI`) turns progress bars off.
"""

from __future__ import annotations

import os

_FALSE = ("", "0", "false", "no", "off")


def fast_mode() -> bool:
    """True when the environment asks for the short version (`LAB_FAST` set to anything but 0/false/no/off)."""
    return os.environ.get("LAB_FAST", "").strip().lower() not in _FALSE


def pick(full, fast):
    """`fast` under `LAB_FAST=1`, else `full`: the one place a notebook states both sizes of a setting."""
    return fast if fast_mode() else full


def progress_enabled() -> bool:
    """Progress bars on, unless `LAB_PROGRESS=0` or `CI` is set (executed notebooks stay quiet)."""
    if os.environ.get("CI", "").strip().lower() not in _FALSE:
        return False
    return os.environ.get("LAB_PROGRESS", "1").strip().lower() not in _FALSE


def setup_torch(seed: int = 0) -> None:
    """Seed torch and use `LAB_THREADS` CPU threads (default 1) for the notebooks' small models.

    Their matmuls are too small to gain from splitting; on a machine whose cores are shared, extra
    threads mostly wait on each other (measured on 2 busy cores: 20 steps of a 4x64 model took 0.7 s on
    one thread, 31 s on two).
    """
    import torch

    torch.manual_seed(seed)
    torch.set_num_threads(max(1, int(os.environ.get("LAB_THREADS", "1"))))

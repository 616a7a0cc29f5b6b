"""One writer per run directory: an advisory lock held while a process trains into it.

Two `train` (or `pipeline`) processes given the same --out would both pass the checks made before
writing, then replace each other's checkpoints and interleave their metrics. The lock is an `flock` on
`DIR/.lock`: the system releases it when its process ends, however it ends, so a killed run never
leaves a lock behind that blocks --resume.
"""

from __future__ import annotations

import os
from pathlib import Path

from lab.errors import LabError

LOCK_FILE = ".lock"

try:
    import fcntl
except ImportError:  # no flock (Windows): runs go unlocked there
    fcntl = None


class RunLock:
    """Context manager: hold the lock of run directory `directory` (which must exist) or raise LabError."""

    def __init__(self, directory: str | os.PathLike):
        self.path = Path(directory) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        if fcntl is None or self._fd is not None:
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            who = f" (process {holder})" if holder.isdigit() else ""
            raise LabError(f"{self.path.parent}: another process is writing this run{who}; wait for it to "
                           "end or choose another --out") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    @property
    def held(self) -> bool:
        """Whether this process holds the lock (on a system without flock: always)."""
        return fcntl is None or self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

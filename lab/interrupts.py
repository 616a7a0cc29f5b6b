"""SIGINT and SIGTERM mean the same thing to every command: stop, remove temporary output, exit 130.

Python turns SIGINT into KeyboardInterrupt, which every writer of the lab already answers by removing
its temporary directory (`except BaseException: rmtree(tmp)`), while SIGTERM kills the process on the
spot (exit 143) and leaves that directory behind. `interrupt_on_sigterm` makes SIGTERM raise the same
KeyboardInterrupt for the duration of a command.

Before a command starts there is nothing to clean up, only imports that take seconds (torch), where
a KeyboardInterrupt would print a traceback: `exit_at_once_on_signal`, installed by the package's
`__init__` when the process is `python -m lab`, exits 130 with one line instead. The training loop
installs its own handlers (lab.train.signals) over these while it runs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)
EXIT_CODE = 130


def started_as_command() -> bool:
    """Whether this process is `python -m lab ...` (the library imported by anything else is left alone)."""
    argv = list(getattr(sys, "orig_argv", ()))
    takes_value = False
    for i, arg in enumerate(argv[1:], 1):
        if takes_value:  # the value of -X or -W
            takes_value = False
            continue
        if arg in ("-X", "-W"):
            takes_value = True
            continue
        if arg == "-m":
            return i + 1 < len(argv) and argv[i + 1] == "lab"
        if arg.startswith("-m"):
            return arg == "-mlab"
        if arg == "-c" or not arg.startswith("-"):  # a program or a script: not `-m lab`
            return False
    return False


def _exit_now(signum, frame) -> None:
    os.write(2, b"interrupted\n")
    os._exit(EXIT_CODE)


def exit_at_once_on_signal() -> None:
    """SIGINT and SIGTERM end the process with exit code 130 and one line, no traceback (nothing written yet)."""
    if threading.current_thread() is threading.main_thread():
        for s in SIGNALS:
            signal.signal(s, _exit_now)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def interrupt_on_sigterm():
    """While inside, SIGINT and SIGTERM both raise KeyboardInterrupt; the previous handlers come back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _interrupt) for s in SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)

"""The student's process: load the submission, then answer the grader's calls, one message per call.

It runs inside the sandbox (`lab.grading.sandbox`) and knows nothing of the tests or the scores: the
grader sends a function name and its arguments, this process calls the student's function and sends
back the value it returned (and the arguments as the call left them, for answers that work in place).
Whatever the student's code does here, even rewriting this loop, it can only change its own answers.

Protocol (`lab.grading.wire` messages on the two pipes the process starts with as stdin and stdout,
which are moved away before any student code runs so that its prints go nowhere):
  -> {"ready": true}  after torch and the lab are imported (the grader's start-up, not the student's time)
  -> {"loaded": true, "cell_errors": [...]} or {"load_error": "..."}  after the submission's cells ran
  <- {"seed": n}                 before each question: torch.manual_seed(n)
  <- {"call": name, "args": [...], "kwargs": {...}}
  -> {"result": ..., "modules_after": [...]} or {"error": "...", "not_done": bool}
"""

from __future__ import annotations

import os
import resource
import sys
import traceback
from pathlib import Path


def _take_protocol_fds() -> tuple[int, int]:
    """Move the pipes off fds 0/1 and point 0, 1 and 2 at /dev/null, so that print() cannot garble them."""
    requests, replies = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    return requests, replies


def _apply_limits(limits: dict) -> None:
    """Hard limits (the student's code cannot raise them again): memory, processes, file size, CPU time."""
    names = {"memory": resource.RLIMIT_AS, "processes": resource.RLIMIT_NPROC, "file_size": resource.RLIMIT_FSIZE,
             "cpu": resource.RLIMIT_CPU, "open_files": resource.RLIMIT_NOFILE, "core": resource.RLIMIT_CORE}
    for name, value in limits.items():
        resource.setrlimit(names[name], (value, value))


def _import_in_background(modules: list[str]) -> None:
    """Import what later questions need (torch._dynamo, for torch's optimizers) while the submission loads
    and the first questions run: a question that needs it waits for the import to finish, not restart it."""
    import importlib
    import threading

    def run() -> None:
        for name in modules:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001 - the question that needs it will report the error itself
                pass

    if modules:
        threading.Thread(target=run, name="preload", daemon=True).start()


def describe_failure(error: BaseException, filename: str, cells) -> str:
    """One line a student can act on: the assertion's message, or the exception and where in their file."""
    from lab.grading.student import line_of

    if type(error) is NotImplementedError:  # an untouched stub: say so plainly, without a traceback
        stub = str(error).strip()
        return f"not done yet: {stub + '() ' if stub else ''}still raises NotImplementedError"
    where = ""
    if isinstance(error, SyntaxError) and error.filename == filename and error.lineno:
        text = (error.text or "").strip()
        where = f" ({line_of(error.lineno, cells)}{': ' + text if text else ''})"
    for frame in reversed(traceback.extract_tb(error.__traceback__)):
        if frame.filename == filename and frame.lineno:
            line = (frame.line or "").strip()
            where = f" ({line_of(frame.lineno, cells)}{': ' + line if line else ''})"
            break
    text = str(error.msg if isinstance(error, SyntaxError) else error).strip()
    text = text.splitlines()[0] if text else ""
    if isinstance(error, AssertionError) and text:
        return f"{text}{where}"
    return f"{type(error).__name__}{': ' + text if text else ''}{where}"


def main(submission: str, limits: dict, drop_to_uid: int | None, preload: list[str]) -> None:
    requests, replies = _take_protocol_fds()
    if drop_to_uid is not None:  # the sandbox started as root: become nobody before anything else runs
        os.setgroups([])
        os.setgid(drop_to_uid)
        os.setuid(drop_to_uid)
    import torch

    from lab.grading.lab_objects import decode_object, encode_object
    from lab.grading.student import load_cells, submission_cells
    from lab.grading.wire import Closed, Decoder, Encoder, WireError, read_message, write_message

    # The questions use tiny tensors: one thread is as fast, and it keeps grading steady when several
    # graders share the cores.
    torch.set_num_threads(1)
    _apply_limits(limits)
    write_message(replies, {"ready": True})
    _import_in_background(preload)

    path = Path(submission)
    filename = path.name
    try:
        cells = submission_cells(path)
    except (OSError, ValueError) as e:
        write_message(replies, {"load_error": f"your file cannot be read: {e}"})
        return
    module, errors = load_cells(path, filename)
    failed = [f"cell {e.cell.number} failed to run: {describe_failure(e.error, filename, cells)}" for e in errors]
    if errors and len(cells) == 1:
        write_message(replies, {"load_error": f"your file failed to run: {describe_failure(errors[0].error, filename, cells)}"})
        return
    write_message(replies, {"loaded": True, "cell_errors": failed})

    while True:
        try:
            header, blob = read_message(requests)
        except Closed:
            return
        if "seed" in header:
            torch.manual_seed(int(header["seed"]))
            continue
        name = header.get("call")
        fn = module.__dict__.get(name) if isinstance(name, str) else None
        if not callable(fn):
            why = f"; {failed[0]}" if failed else ""
            write_message(replies, {"error": f"your file defines no function {name}(){why}", "not_done": False})
            continue
        try:
            decoder = Decoder.from_blob(blob, decode_object)
            args = decoder.value(header.get("args", []))
            kwargs = decoder.value(header.get("kwargs", {"dict": []}))
            result = fn(*args, **kwargs)
            encoder = Encoder(encode_object)
            for storage in decoder.storages:  # the grader's own storages keep their indices in the reply
                encoder.storage_index(storage.untyped_storage())
            reply = {"result": encoder.value(result),
                     "modules_after": [[i, encoder.value(a)] for i, a in enumerate(args)
                                       if isinstance(a, torch.nn.Module)]}
            write_message(replies, reply, encoder.blob())
        except WireError as e:
            write_message(replies, {"error": f"your function returned {e}", "not_done": False})
        except BaseException as e:  # noqa: BLE001 - anything the student's code raises is its answer
            write_message(replies, {"error": describe_failure(e, filename, cells),
                                    "not_done": type(e) is NotImplementedError})


if __name__ == "__main__":
    import json

    main(sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]), json.loads(sys.argv[4]))

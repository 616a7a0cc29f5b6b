"""The grader's handle on the student's process: start it, call the student's functions in it, kill it.

`StudentProcess.call(name, args, kwargs, deadline)` sends the arguments, waits for the answer until the
deadline, and returns the value rebuilt on this side; the arguments' storages come back too, so a
function that works in place (a training loop) has changed the grader's objects as it would have in
one process. `Student` is what a question's test receives: `student.route(x, w, 2)` is such a call.
Nothing the process sends is trusted beyond being a value: errors come back as text, cleaned of
control characters and cut to one line, so they cannot forge lines of the report.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from torch import nn

from lab.grading.lab_objects import assign_tensors, decode_object, encode_object
from lab.grading.sandbox import Limits, kill_tree, prepare_workdir, worker_command, worker_environment
from lab.grading.wire import Closed, Decoder, Encoder, Timeout, WireError, read_message, write_message

MAX_MESSAGE_CHARS = 600
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,100}$")


class StudentError(AssertionError):
    """A call the student's code answered with an error (the text says which and where)."""


class NotDone(StudentError):
    """The student's function still raises NotImplementedError."""


class StudentTimedOut(Exception):
    """The student's process did not answer before the question's deadline."""


class StudentDied(Exception):
    """The student's process ended in the middle of a call."""


class StudentGarbled(Exception):
    """The student's process wrote something that is not a message on the grader's channel."""


def clean_text(text: object) -> str:
    """One printable line of at most MAX_MESSAGE_CHARS characters."""
    line = " ".join(str(text).split())
    line = "".join(ch if ch.isprintable() else "?" for ch in line)
    return line if len(line) <= MAX_MESSAGE_CHARS else line[:MAX_MESSAGE_CHARS - 3] + "..."


class StudentProcess:
    """One sandboxed process running one submission."""

    def __init__(self, submission: Path, student_lab: Path, kind: str, limits: Limits, preload: list[str],
                 scratch: Path):
        self.kind = kind
        scratch.mkdir(parents=True, exist_ok=True)
        self.workdir = Path(os.path.realpath(scratch)) / "work"
        self.workdir.mkdir()
        name = submission.name if _SAFE_NAME.match(submission.name) else "submission" + submission.suffix
        shutil.copyfile(submission, self.workdir / name)
        prepare_workdir(self.workdir, kind)
        self.stderr_path = scratch / "startup-errors.txt"
        with open(self.stderr_path, "wb") as stderr:
            self.proc = subprocess.Popen(
                worker_command(kind, self.workdir, name, student_lab, limits, preload),
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, cwd=self.workdir,
                env=worker_environment(self.workdir), start_new_session=True)
        self.requests, self.replies = self.proc.stdin.fileno(), self.proc.stdout.fileno()
        os.set_blocking(self.requests, False)

    def startup_errors(self) -> str:
        """The last lines the process wrote to stderr before it took the pipes (for a failed start)."""
        try:
            text = self.stderr_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return clean_text(" | ".join(text[-3:]))

    def exit_code(self) -> int | None:
        return self.proc.poll()

    def receive(self, deadline: float) -> tuple[dict, bytes]:
        try:
            return read_message(self.replies, deadline)
        except Timeout:
            raise StudentTimedOut() from None
        except Closed:
            self.close()
            raise StudentDied(self.proc.returncode) from None
        except WireError as e:  # the framing is lost: nothing more can be read from this process
            self.close()
            raise StudentGarbled(clean_text(e)) from None

    def seed(self, value: int, deadline: float) -> None:
        self._send({"seed": value}, b"", deadline)

    def _send(self, header: dict, blob: bytes, deadline: float) -> None:
        try:
            write_message(self.requests, header, blob, deadline)
        except Timeout:
            raise StudentTimedOut() from None
        except Closed:
            self.close()
            raise StudentDied(self.proc.returncode) from None

    def call(self, name: str, args: tuple, kwargs: dict, deadline: float):
        sent = Encoder(encode_object)
        header = {"call": name, "args": sent.value(list(args)), "kwargs": sent.value(dict(kwargs))}
        self._send(header, sent.blob(), deadline)
        reply, blob = self.receive(deadline)
        if "error" in reply:
            error = NotDone if reply.get("not_done") is True else StudentError
            raise error(clean_text(reply["error"]))
        try:
            received = Decoder.from_blob(blob, decode_object)
            if len(received.storages) < len(sent.storages):
                raise WireError("an answer that lost the arguments' tensors")
            for i, own in enumerate(sent.storages):  # what the call did to the arguments, into the grader's own
                if received.storages[i].numel() == own.numel():
                    own.copy_(received.storages[i])
                received.storages[i] = own
            result = received.value(reply.get("result"))
            self._update_modules(args, reply.get("modules_after", []), received)
        except WireError as e:
            raise StudentError(clean_text(f"{name}() gave an answer the grader cannot read: {e}")) from None
        return result

    @staticmethod
    def _update_modules(args: tuple, after: list, received: Decoder) -> None:
        """A module argument as the call left it: parameters replaced or reassigned, train/eval mode."""
        for item in after if isinstance(after, list) else []:
            if not (isinstance(item, list) and len(item) == 2 and type(item[0]) is int and 0 <= item[0] < len(args)):
                raise WireError("a garbled list of arguments")
            module, body = args[item[0]], item[1]
            body = body.get("object") if isinstance(body, dict) else None
            if isinstance(module, nn.Module) and isinstance(body, dict) and body.get("kind") == type(module).__name__:
                assign_tensors(module, body, received, type(module).__name__)

    def close(self) -> None:
        """Kill the process and everything it started; idempotent."""
        if self.proc.returncode is None:
            kill_tree(self.proc.pid)
            self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            try:
                pipe.close()
            except OSError:
                pass


class Student:
    """The student's module as a question's test sees it: each attribute is a function run in their process."""

    def __init__(self, process: StudentProcess, deadline: float):
        self._process, self._deadline = process, deadline

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)

        def call(*args, **kwargs):
            return self._process.call(name, args, kwargs, self._deadline)

        call.__name__ = name
        return call

"""Where the student's process runs: bubblewrap when the machine has it, else a plain child process.

With `bwrap` (Debian: `apt-get install bubblewrap`) the process sees a filesystem of its own: the
system's `/usr` and Python read-only, torch's site-packages read-only, the lab copy of
`lab.grading.student_lab` (no tests, no solutions, no off-limits code) read-only, a fresh `/tmp`, and
one writable folder, its working directory, holding a copy of the submission and nothing else. It
has no network (a network namespace of its own), its own PID namespace (nothing outside is visible,
and everything it started dies with it), and no capabilities; started by root it becomes `nobody`.

Without bwrap the process runs as the grader's user in a working directory of its own, with the same
limits and the same protocol, so the verdict stays in the grader's process; but it can read what that
user can read and reach the network. `SANDBOX_KINDS` names both; the report says which one graded.

Either way it gets hard resource limits (memory, processes, file size, CPU time) and is killed with
everything it started when the grader is done with it.
"""

from __future__ import annotations

import os
import shutil
import signal
import site
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

SANDBOX_KINDS = ("bwrap", "process")
NOBODY = 65534
HOME = "/home/student"
STUDENT_LAB = "/opt/lab"


@dataclass(frozen=True)
class Limits:
    memory_mb: int = 4096
    processes: int = 128  # threads count too: torch starts a few
    file_size_mb: int = 64
    cpu_seconds: int = 600

    def rlimits(self, extra_processes: int) -> dict:
        return {"memory": self.memory_mb << 20, "processes": self.processes + extra_processes,
                "file_size": self.file_size_mb << 20, "cpu": self.cpu_seconds, "open_files": 256, "core": 0}


def bwrap_path() -> str | None:
    return shutil.which("bwrap")


def available_kind(requested: str = "auto") -> str:
    """The sandbox to use: "bwrap" when installed (or asked for, which then must be installed), else "process"."""
    if requested == "process":
        return "process"
    found = bwrap_path() is not None
    if requested == "bwrap" and not found:
        from lab.errors import LabError

        raise LabError("--sandbox bwrap: bubblewrap is not installed (Debian: apt-get install bubblewrap)")
    return "bwrap" if found else "process"


def _processes_of(uid: int) -> int:
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                count += os.stat(f"/proc/{entry}").st_uid == uid
            except OSError:
                pass
    return count


def _site_dirs() -> list[str]:
    dirs = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *site.getsitepackages()]
    seen, out = set(), []
    for d in dirs:
        real = os.path.realpath(d)
        if os.path.isdir(real) and real not in seen:
            seen.add(real)
            out.append(real)
    return out


def _boot(submission: str, rlimits: dict, drop_to_uid: int | None, paths: list[str], preload: list[str]) -> list[str]:
    code = ("import sys; sys.path[:0] = " + repr(paths) + "; sys.argv = ['worker']; "
            "from lab.grading.worker import main; main(" + repr(submission) + ", " + repr(rlimits) + ", "
            + repr(drop_to_uid) + ", " + repr(preload) + ")")
    return ["-I", "-S", "-B", "-c", code]


def worker_command(kind: str, workdir: Path, submission_name: str, student_lab: Path, limits: Limits,
                   preload: list[str]) -> list[str]:
    """The command line that starts the student's process; its cwd must be `workdir` for "process"."""
    python = os.path.realpath(sys.executable)
    if kind == "process":
        paths = [str(student_lab), *_site_dirs()]
        rlimits = limits.rlimits(_processes_of(os.getuid()))
        return [python, *_boot(str(workdir / submission_name), rlimits, None, paths, preload)]

    base = os.path.realpath(sys.base_prefix)
    inside_python = python if python.startswith("/usr/") else "/opt/python/" + os.path.relpath(python, base)
    root = os.getuid() == 0
    cmd = [bwrap_path(), "--die-with-parent", "--new-session", "--unshare-ipc", "--unshare-pid",
           "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]
    if root:  # bwrap needs no user namespace; the worker keeps setuid just long enough to become nobody
        cmd += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        cmd += ["--unshare-user"]
    cmd += ["--ro-bind", "/usr", "/usr"]
    for top in ("/lib", "/lib64", "/lib32", "/bin", "/sbin"):
        if os.path.islink(top):
            cmd += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            cmd += ["--ro-bind", top, top]
    if os.path.isfile("/etc/ld.so.cache"):
        cmd += ["--ro-bind", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    # Folders bwrap makes on its own are private to root; the worker may be nobody, so make them readable.
    cmd += ["--perms", "0755", "--dir", "/opt", "--perms", "0755", "--dir", "/opt/site-packages",
            "--perms", "0755", "--dir", "/home"]
    if not python.startswith("/usr/"):
        cmd += ["--ro-bind", base, "/opt/python"]
    paths = [STUDENT_LAB]
    for i, site_dir in enumerate(_site_dirs()):
        inside = f"/opt/site-packages/{i}"
        cmd += ["--ro-bind", site_dir, inside]
        paths.append(inside)
        if os.path.isdir(os.path.join(site_dir, "lab")):  # a lab installed there is the full one: hide it
            cmd += ["--tmpfs", f"{inside}/lab"]
    cmd += ["--ro-bind", str(student_lab), STUDENT_LAB,
            "--bind", str(workdir), HOME, "--chdir", HOME,
            "--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--size", str(64 << 20), "--tmpfs", "/tmp",
            "--clearenv", "--setenv", "HOME", HOME, "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "TMPDIR", "/tmp",
            "--setenv", "OMP_NUM_THREADS", "1", "--setenv", "MKL_NUM_THREADS", "1", "--setenv", "LANG", "C.UTF-8"]
    drop = NOBODY if root else None
    rlimits = limits.rlimits(_processes_of(NOBODY if root else os.getuid()))
    return [*cmd, inside_python, *_boot(f"{HOME}/{submission_name}", rlimits, drop, paths, preload)]


def worker_environment(workdir: Path) -> dict:
    """The environment of a "process" worker: nothing of the grader's but what Python and torch need."""
    return {"PATH": "/usr/bin:/bin", "HOME": str(workdir), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "LANG": "C.UTF-8"}


def prepare_workdir(workdir: Path, kind: str) -> None:
    """Make the working directory writable by the sandboxed user (nobody, when the grader is root)."""
    if kind == "bwrap" and os.getuid() == 0:
        for path in (workdir, *workdir.iterdir()):
            os.chown(path, NOBODY, NOBODY)


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2:].split()[1])
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def descendants(pid: int) -> list[int]:
    tree, found, todo = _children(), [], [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_tree(pid: int) -> None:
    """SIGKILL the process `pid`, its process group and every process below it, until none is left."""
    for _ in range(20):
        victims = descendants(pid)
        for target in (pid, *victims):
            try:
                os.kill(target, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if not victims:
            return
        time.sleep(0.02)


def describe(kind: str) -> str:
    if kind == "bwrap":
        return "bubblewrap sandbox (no network, own filesystem view, resource limits)"
    return "plain child process (bubblewrap not installed: resource limits only, no filesystem isolation)"


__all__ = ["Limits", "SANDBOX_KINDS", "available_kind", "describe", "kill_tree", "prepare_workdir", "worker_command",
           "worker_environment"]

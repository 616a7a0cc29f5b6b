"""`@question(points=...)`: how an assignment's tests file declares its questions, and the checks they use.

A tests file may also declare, at module level:
- `OFF_LIMITS = ["lab.growth", "lab.moe.route"]`: the lab's implementations of its answers, which the
  student's process cannot import (`lab.grading.student_lab`);
- `VISIBILITY = "hidden"`: its questions are hidden tests (run with `--hidden`, marked so in gradebooks);
- `PRELOAD = ["torch._dynamo"]`: modules the student's process imports in the background from the
  start, when a question would otherwise pay for their first import (torch's optimizers import
  `torch._dynamo`, seconds on a busy machine) inside its time limit.

The checks fail with the first place where the answer differs: the index, the expected value and the
received one, so that a student sees what to look at.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Callable

import torch


@dataclass(frozen=True)
class Question:
    """One graded question: a test of the student's module worth `points`, all or nothing."""

    name: str
    title: str
    points: int
    test: Callable[[ModuleType], None]
    hidden: bool = False


def question(points: int, title: str | None = None) -> Callable:
    """Mark a test function `f(student)` as a question; the first docstring line is its default title."""
    if points <= 0:
        raise ValueError(f"a question is worth a positive number of points, got {points}")

    def mark(test: Callable[[ModuleType], None]) -> Callable[[ModuleType], None]:
        doc = (test.__doc__ or test.__name__).strip().splitlines()[0]
        test.question = Question(test.__name__, title or doc, points, test)
        return test

    return mark


def questions_of(namespace: dict) -> list[Question]:
    """The questions a tests module defines, in the order they appear in the file."""
    hidden = namespace.get("VISIBILITY") == "hidden"
    return [Question(q.name, q.title, q.points, q.test, hidden)
            for q in (value.question for value in namespace.values() if hasattr(value, "question"))]


def declared_names(tests_file: Path, constant: str) -> list[str]:
    """A list of dotted names a tests file declares (OFF_LIMITS, PRELOAD), read without running the file,
    so that the student's process can start before the tests are loaded."""
    for node in ast.parse(Path(tests_file).read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == constant for t in node.targets):
            value = ast.literal_eval(node.value)
            if not (isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)):
                raise ValueError(f"{tests_file}: {constant} must be a list of dotted names")
            return list(value)
    return []


def _show(value) -> str:
    if isinstance(value, torch.Tensor) and value.dim() == 0:
        value = value.item()
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, bool):
        return str(value)
    return repr(value)


def _index(flat: int, shape: tuple[int, ...]) -> str:
    index = []
    for size in reversed(shape):
        index.append(flat % size)
        flat //= size
    return "[" + ", ".join(str(i) for i in reversed(index)) + "]"


def check_close(actual, expected, what: str, atol: float = 1e-5, rtol: float = 1e-5) -> None:
    """Assert `actual` equals `expected` (tensors, within tolerance); the message shows the first difference."""
    expected = expected if isinstance(expected, torch.Tensor) else torch.tensor(expected)
    if not isinstance(actual, torch.Tensor):
        got = f" ({_show(actual)})" if isinstance(actual, (int, float)) else ""
        raise AssertionError(f"{what}: expected a tensor, got {type(actual).__name__}{got}")
    if tuple(actual.shape) != tuple(expected.shape):
        raise AssertionError(f"{what}: expected shape {tuple(expected.shape)}, got {tuple(actual.shape)}")
    if actual.is_complex() or expected.is_complex():
        raise AssertionError(f"{what}: expected real numbers, got {actual.dtype}")
    a, e = actual.detach().double(), expected.detach().double()
    gap = (a - e).abs()
    bound = atol + rtol * e.abs()
    wrong = ~(gap <= bound)  # `<=`: a NaN is never close
    if not bool(wrong.any()):
        return
    if e.dim() == 0:
        raise AssertionError(f"{what}: expected {_show(e)}, got {_show(a)}")
    first = int(wrong.flatten().nonzero()[0])
    where = _index(first, tuple(e.shape))
    count = int(wrong.sum())
    nan = " (NaN)" if bool(a.flatten()[first].isnan()) else ""
    raise AssertionError(
        f"{what}: first difference at index {where}: expected {_show(e.flatten()[first].item())}, "
        f"got {_show(a.flatten()[first].item())}{nan}; {count} of {e.numel()} values differ, "
        f"largest gap {gap[wrong].nan_to_num(float('inf')).max().item():.3g}")


def check_equal(actual, expected, what: str) -> None:
    """Assert a list (or tensor of integers) equals `expected` exactly, showing the first differing item."""
    got = actual.tolist() if isinstance(actual, torch.Tensor) else actual
    want = expected.tolist() if isinstance(expected, torch.Tensor) else expected
    if isinstance(got, tuple):
        got = list(got)
    if got == want:
        return
    if not isinstance(got, list):
        raise AssertionError(f"{what}: expected {want}, got {_show(got)} ({type(got).__name__})")
    for i, (g, w) in enumerate(zip(got, want)):
        if g != w:
            raise AssertionError(f"{what}: first difference at index {i}: expected {w}, got {g} "
                                 f"(expected {_short(want)}, got {_short(got)})")
    raise AssertionError(f"{what}: expected {len(want)} items, got {len(got)} (expected {_short(want)}, "
                         f"got {_short(got)})")


def _short(values: list, limit: int = 12) -> str:
    text = repr(values)
    return text if len(values) <= limit else repr(values[:limit])[:-1] + ", ...]"

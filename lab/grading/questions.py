"""`@question(points=...)`: how an assignment's tests file declares its questions."""

from __future__ import annotations

from dataclasses import dataclass
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
    return [value.question for value in namespace.values() if hasattr(value, "question")]


def check_close(actual, expected, what: str, atol: float = 1e-5, rtol: float = 1e-5) -> None:
    """Assert `actual` equals `expected` (tensors, within tolerance) with a message a student can act on."""
    if not isinstance(actual, torch.Tensor):
        raise AssertionError(f"{what}: expected a tensor, got {type(actual).__name__}")
    if tuple(actual.shape) != tuple(expected.shape):
        raise AssertionError(f"{what}: expected shape {tuple(expected.shape)}, got {tuple(actual.shape)}")
    gap = (actual.detach().double() - expected.detach().double()).abs()
    bound = atol + rtol * expected.detach().double().abs()
    if not bool((gap <= bound).all()):  # `<=`, not `>`: a NaN fails too
        if bool(actual.isnan().any()) and not bool(expected.isnan().any()):
            raise AssertionError(f"{what}: got NaN values")
        raise AssertionError(f"{what}: values differ from the expected ones by up to {gap.max().item():.3g}")

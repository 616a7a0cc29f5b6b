"""Rules on dataclass fields, shared by every validated settings object (training recipes, experiment
settings): each rule is field metadata holding a predicate and what it demands, so that a checker can
name the key and the demand in one error line."""

from __future__ import annotations


def rule(check, text: str) -> dict:
    """Field metadata: a predicate on the value and what it demands, for the error message."""
    return {"rule": (check, text)}


def positive() -> dict:
    return rule(lambda v: v > 0, "must be > 0")


def non_negative() -> dict:
    return rule(lambda v: v >= 0, "must be >= 0")


def one_of(*choices: str) -> dict:
    return rule(lambda v: v in choices, f"must be one of {', '.join(choices)}")

"""Errors a user can act on. The CLI prints them as one line each (no traceback) and exits 2."""

from __future__ import annotations


class VntError(Exception):
    """A problem the user can fix: bad input, missing prerequisite, a failed host."""

    exit_code = 2

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.problems = problems or []

    def lines(self) -> list[str]:
        return [str(self)] + [f"  {p}" for p in self.problems]


class DataError(VntError):
    """A run's data is partly unreadable (a truncated spool, ...): the report says what was lost."""

    exit_code = 4


class HostError(VntError):
    """A host failed (unreachable, a task failed on it): exit 3, so CI can tell it from bad input."""

    exit_code = 3


class RegressionError(VntError):
    """A segment regressed against the baseline (the CI gate): exit 1."""

    exit_code = 1

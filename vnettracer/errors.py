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

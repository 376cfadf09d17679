"""Errors that reach the user as one clear line: what is wrong and how to fix it."""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input or environment, reported as one line with a fix.

    The CLI prints ``error: <problem> <fix>`` and exits with ``exit_code``; no traceback.
    """

    exit_code = 2

    def __init__(self, problem: str, fix: str = "") -> None:
        self.problem = problem.rstrip(".")
        self.fix = fix.rstrip(".")
        super().__init__(self.message)

    @property
    def message(self) -> str:
        return f"{self.problem}. {self.fix}." if self.fix else f"{self.problem}."


class InputError(UserError):
    """A bad input file: not readable, wrong kind, empty, corrupt, out of range."""


class NoFaceError(InputError):
    """No face was found where one is needed."""


class OutputError(UserError):
    """The output cannot be written where the user asked."""


class MissingWeightsError(UserError):
    """An optional backend's weights are not on this machine."""


class ResourceError(UserError):
    """The machine ran out of something the job needs (GPU memory, disk)."""

"""User-facing errors.

Every problem a user can fix (a bad file, a wrong option, a missing column) is raised as a
:class:`CellfusionError` that says *which* file or object, *what* is wrong and *what to do*.
The command-line tools print these as one readable message and exit with status 2; they never
show a traceback for them.
"""

from __future__ import annotations

from pathlib import Path


class CellfusionError(Exception):
    """An error caused by the user's input, with a message that tells how to fix it.

    Parameters
    ----------
    problem:
        What is wrong, in one sentence.
    path:
        The file or folder concerned, if any.
    hint:
        What the user can do about it.
    """

    def __init__(self, problem: str, *, path: str | Path | None = None, hint: str | None = None):
        self.problem = problem
        self.path = None if path is None else str(path)
        self.hint = hint
        super().__init__(str(self))

    def __str__(self) -> str:  # noqa: D105
        msg = f"{self.path}: {self.problem}" if self.path else self.problem
        if self.hint:
            msg += f"\n  hint: {self.hint}"
        return msg


class InputError(CellfusionError):
    """An input file or table is unreadable, malformed or inconsistent."""


class ConfigError(CellfusionError):
    """A pipeline YAML, option or parameter is invalid."""


class ModelFileError(CellfusionError):
    """A saved model is missing, truncated, tampered with or not in a safe format."""

"""The one exception type for user mistakes.

A `UserError` carries a single line that names the file and line, or the config key, at fault.
The CLI prints it and exits with status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """A mistake in the user's input: printed as one line, exit code 2."""

    def __init__(self, message: str, *, path: str | Path | None = None, line: int | None = None):
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(f"{where}{message}")


def exception_line(exc: BaseException) -> str:
    """`TypeName: first line of the message` (or `TypeName`): how a failure that is recorded rather than
    raised (a teacher request, a replica, a GPU check section) is told in one line."""
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__

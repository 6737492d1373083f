"""The exceptions a command ends with, and its exit codes.

A `UserError` carries a single line that names the file and line, or the config key, at fault.
`PartialFailure` says that some of a command's work failed while the rest finished and is saved.
Anything else is a bug and keeps its traceback. Exit codes of `scalingdown`:

    0    everything asked for was done
    1    some parts failed (each named on stderr, one line apiece); the rest is done and saved,
         and a rerun redoes only what is missing
    2    nothing could be done: a mistake in the config, an input file, or the environment
         (a directory without write permission, a full disk)
    130  interrupted (Ctrl-C); finished work is kept
"""

from __future__ import annotations

import re
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


EXIT_OK, EXIT_PARTIAL, EXIT_USER, EXIT_INTERRUPTED = 0, 1, 2, 130


class PartialFailure(Exception):
    """Some parts of a command's work failed; what succeeded is saved. `failures` has one line each."""

    def __init__(self, failures: list[str]):
        self.failures = list(failures)
        count = len(self.failures)
        super().__init__(f"{count} part{'s' if count != 1 else ''} failed: " + "; ".join(self.failures))


# `scheme://user:password@host` or `scheme://token@host`: the credentials part of a URL.
_URL_CREDENTIALS = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s\"']+@")


def redact(text: str) -> str:
    """`text` with the credentials of every URL in it replaced by `***`
    (`http://user:secret@host/v1` -> `http://***@host/v1`): what the tool prints or writes."""
    return _URL_CREDENTIALS.sub(r"\g<scheme>***@", text)


def redact_tree(value):
    """`redact` applied to every string inside nested dicts and lists (a config being recorded)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: redact_tree(item) for key, item in value.items()}
    if isinstance(value, list):
        return [redact_tree(item) for item in value]
    return value

"""Reading and writing the run directory's plain files, crash-safely.

Every artifact is written to a temporary name in the same directory and renamed into place when
complete, so a crash never leaves a half-written file that looks finished. JSONL readers report a
malformed line as `file:line: ...` through `UserError`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from scalingdown.errors import UserError


def _file_mode() -> int:
    """0666 less the process's umask: the mode `open(path, "w")` gives a new file."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = _file_mode()


@contextmanager
def atomic_open(path: str | Path, mode: str = "w") -> Iterator[IO]:
    """Open a temporary sibling of `path` for writing; rename it onto `path` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _FILE_MODE)  # mkstemp makes 0600; an artifact gets what open() would give it
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        if exc.filename is None:  # a write that failed (full disk, ulimit -f) names no file itself
            exc.filename = str(path)
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_directory(out_dir: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling directory to fill; on success it replaces `out_dir` by renames.

    A rename cannot replace a non-empty directory, so an existing `out_dir` is moved aside first,
    put back if the swap fails, and deleted only once the new one is in place. On any error the
    temporary directory is removed and `out_dir` is left as it was.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        tmp.chmod(_directory_mode())  # mkdtemp makes it private; the result is a normal directory
        yield tmp
        if not out_dir.exists():
            os.replace(tmp, out_dir)
            return
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".old", dir=out_dir.parent))
        os.replace(out_dir, old / out_dir.name)
        try:
            os.replace(tmp, out_dir)
        except BaseException:
            os.replace(old / out_dir.name, out_dir)
            raise
        finally:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _directory_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o777 & ~umask


@contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive lock for a read-modify-write of `path` (an advisory `flock` on a hidden
    `.<name>.lock` beside it), so processes that update one file (parallel `train --student` jobs,
    stages recording themselves in manifest.json) do not lose each other's changes."""
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with (path.parent / f".{path.name}.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def update_json(path: str | Path, change: Callable[[dict], dict | None]) -> dict:
    """Read the JSON object at `path` (or {}), apply `change` (which edits it in place or returns
    a new one) and write it back atomically, all under `file_lock(path)`. Returns what was written."""
    path = Path(path)
    with file_lock(path):
        current = read_json(path) if path.is_file() else {}
        if not isinstance(current, dict):
            current = {}
        result = change(current)
        current = current if result is None else result
        write_json(path, current)
    return current


def merge_json(path: str | Path, entries: dict) -> dict:
    """Add `entries` to the JSON object at `path`, keeping the keys of other writers (locked)."""
    return update_json(path, lambda current: current.update(entries))


def write_json(path: str | Path, obj: Any) -> None:
    with atomic_open(path) as handle:
        json.dump(obj, handle, indent=2, sort_keys=False, default=str)
        handle.write("\n")


def decode_text(data: bytes, path: str | Path, *, what: str = "file", first_line: int = 1) -> str:
    """`data` as UTF-8 text, or a `UserError` naming the file and line: a binary file (NUL bytes) or
    one in another encoding is a user's mistake, not a crash."""
    if b"\x00" in data:
        line = first_line + data[: data.index(b"\x00")].count(b"\n")
        raise UserError(f"this {what} is a binary file, not text", path=path, line=line)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = first_line + data[: exc.start].count(b"\n")
        raise UserError(
            f"this {what} is not UTF-8 text (byte 0x{data[exc.start]:02x}); save it as UTF-8",
            path=path,
            line=line,
        ) from None


def read_text(path: str | Path, *, what: str = "file") -> str:
    """A text file's content; unreadable, binary or non-UTF-8 files raise one `UserError` line."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {what} ({exc.strerror or exc})", path=path) from None
    return decode_text(data, path, what=what)


def read_json(path: str | Path) -> Any:
    path = Path(path)
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"malformed JSON: {exc.msg}", path=path, line=exc.lineno) from None


def write_jsonl(path: str | Path, rows: Iterable[Any]) -> int:
    """Write rows (dicts or pydantic models) as JSON lines, atomically. Returns the row count."""
    count = 0
    with atomic_open(path) as handle:
        for row in rows:
            if hasattr(row, "model_dump"):
                row = row.model_dump(mode="json")
            handle.write(json.dumps(row, ensure_ascii=False, default=str))
            handle.write("\n")
            count += 1
    return count


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """Yield `(line_number, object)` for each non-blank line; a bad line raises `UserError`."""
    path = Path(path)
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise UserError(f"cannot read file ({exc.strerror or exc})", path=path) from None
    with handle:
        for number, raw in enumerate(handle, start=1):
            line = decode_text(raw, path, first_line=number)
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(f"malformed JSON line ({exc.msg})", path=path, line=number) from None
            if not isinstance(obj, dict):
                raise UserError("expected a JSON object on this line", path=path, line=number)
            yield number, obj


def read_jsonl(path: str | Path) -> list[dict]:
    return [obj for _, obj in iter_jsonl(path)]

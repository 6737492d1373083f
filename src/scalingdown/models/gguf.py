"""GGUF models converted once into plain Hugging Face directories, and loaded from there.

transformers reads a GGUF file, but a model it read quantised cannot be saved or fine-tuned, and
reading one takes a minute. So `materialise` converts each file once, dequantised to float32, into a
plain Hugging Face directory in the cache, `$SCALINGDOWN_CACHE/gguf/<first 16 hex of its sha256>/`
(default root `~/.cache/scalingdown`); every later load (`scalingdown.models.loading`) reads that
directory in the dtype it asks for. Float32 because that is what dequantised weights are: a 135M
model takes about 0.5 GB there, a 270M one about 1.1 GB.

The directory is written under a temporary name and renamed when complete (`atomic_directory`), so a
crash never leaves a half directory that looks finished; `scalingdown_gguf.json`, written last,
records the source, the sha256, the architecture and the transformers version. The tokenizer is
transformers' own reading of the file's metadata, so the chat template and the special tokens (bos,
eos, pad, unk) are the file's. How a name is found and which file it is: `gguf_files`.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from scalingdown.artifacts import atomic_directory, file_lock, write_json
from scalingdown.errors import UserError, exception_line
from scalingdown.models.gguf_files import (
    CACHE_ENV,
    GgufSource,
    cache_root,
    check_magic,
    file_sha256,
    locate,
)

RECORD_FILE = "scalingdown_gguf.json"  # written last: its presence marks a finished conversion
# Bump when the conversion changes what it writes, so directories made the old way are redone.
CONVERT_FORMAT = 1


def is_converted(out_dir: Path, sha: str) -> bool:
    """True when `out_dir` holds a finished conversion of the file with this sha256."""
    try:
        record = json.loads((out_dir / RECORD_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (
        isinstance(record, dict)
        and record.get("sha256") == sha
        and record.get("format") == CONVERT_FORMAT
        and (out_dir / "config.json").is_file()
    )


def materialise(spec: str) -> Path:
    """The Hugging Face directory for the GGUF model `spec` names, converting it the first time.

    Parallel processes that ask for one file convert it once: the others wait on a lock, then reuse
    the directory. Every failure is one `UserError` line naming `spec`.
    """
    source = locate(spec)
    check_magic(source)
    sha = file_sha256(source)
    out_dir = cache_root() / "gguf" / sha[:16]
    if is_converted(out_dir, sha):
        return out_dir
    try:
        with file_lock(out_dir):
            if not is_converted(out_dir, sha):
                _convert(source, sha, out_dir)
    except OSError as exc:
        raise UserError(
            f"cannot write the converted model ({exc.strerror or exc}); set {CACHE_ENV} to a writable folder",
            path=out_dir,
        ) from None
    return out_dir


@contextlib.contextmanager
def _joined(source: GgufSource, scratch: Path) -> Iterator[Path]:
    """The GGUF file itself, or its chunks joined into a temporary file removed afterwards."""
    if not source.chunked:
        yield source.files[0]
        return
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".join-", dir=scratch) as folder:
        target = Path(folder) / source.name
        with target.open("wb") as out:
            for chunk in source.files:
                with chunk.open("rb") as handle:
                    for block in iter(lambda: handle.read(1 << 20), b""):
                        out.write(block)
        yield target


@dataclass(frozen=True)
class GgufHeader:
    """What the conversion needs to know of a file before transformers reads it."""

    architecture: str
    token_count: int | None
    has_chat_template: bool


def read_header(path: Path, spec: str) -> GgufHeader:
    """The file's architecture and vocabulary size, after checking every tensor lies inside it."""
    try:
        from gguf import GGUFReader
    except ImportError:
        raise UserError(
            "reading a GGUF file needs the gguf package: pip install 'gguf>=0.10' "
            "(or pip install 'scalingdown[cpu-models]')",
            path=spec,
        ) from None
    try:
        reader = GGUFReader(path)
    except Exception as exc:  # a cut-off file fails in numpy reshapes, views, struct reads
        raise UserError(f"corrupt or truncated GGUF file ({exception_line(exc)})", path=spec) from None
    size = path.stat().st_size
    end = max((t.data_offset + t.n_bytes for t in reader.tensors), default=0)
    if not reader.tensors or end > size:
        raise UserError(
            f"truncated GGUF file: its tensors end at byte {end:,}, the file has {size:,}", path=spec
        )
    field = reader.fields.get("general.architecture")
    if field is None:
        raise UserError("corrupt GGUF file: no general.architecture in its metadata", path=spec)
    architecture = bytes(field.parts[field.data[0]]).decode("utf-8", "replace")
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    return GgufHeader(
        architecture=architecture,
        token_count=len(tokens.data) if tokens is not None else None,
        has_chat_template="tokenizer.chat_template" in reader.fields,
    )


def _convert(source: GgufSource, sha: str, out_dir: Path) -> None:
    """Read the file with transformers (dequantised, float32) and save a normal directory."""
    import transformers

    with _joined(source, out_dir.parent) as path:
        header = read_header(path, source.spec)
        size = path.stat().st_size
        print(
            f"{source.spec}: converting the GGUF file ({size / 2**20:,.1f} MiB, {header.architecture}) once "
            f"into a float32 Hugging Face model in {out_dir}; later loads reuse it",
            file=sys.stderr,
        )
        started = time.perf_counter()
        with atomic_directory(out_dir) as tmp, _quiet_bar_in_logs():
            model, tokenizer = _read_with_transformers(path, header, source.spec)
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            _drop_invented_tokens(tmp, header.token_count)
            _readable(tmp)
            write_json(
                tmp / RECORD_FILE,
                {
                    "format": CONVERT_FORMAT,
                    "source": source.spec,
                    "files": [str(f) for f in source.files],
                    "sha256": sha,
                    "architecture": header.architecture,
                    "model_type": model.config.model_type,
                    "dtype": "float32",
                    "gguf_bytes": size,
                    "chat_template": tokenizer.chat_template is not None,
                    "transformers": transformers.__version__,
                    "convert_seconds": round(time.perf_counter() - started, 3),
                },
            )


@contextlib.contextmanager
def _quiet_bar_in_logs() -> Iterator[None]:
    """transformers draws its own tqdm bar over the GGUF tensors; in a log file (stderr not a
    terminal) its carriage-return frames are one unreadable line, so it is switched off there."""
    import functools

    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    original = getattr(gguf_utils, "tqdm", None)
    if original is None or sys.stderr.isatty():
        yield
        return
    gguf_utils.tqdm = functools.partial(original, disable=True)
    try:
        yield
    finally:
        gguf_utils.tqdm = original


def _read_with_transformers(path: Path, header: GgufHeader, spec: str):
    import torch
    import transformers
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoModelForSeq2SeqLM,
        AutoTokenizer,
        GgufConfig,
    )

    folder, name = str(path.parent), path.name
    try:
        config = AutoConfig.from_pretrained(folder, gguf_file=name)
        auto_class = (
            AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM
        )
        # dequantize=True: a model read with its GGUF quantiser attached refuses save_pretrained.
        model = auto_class.from_pretrained(
            folder,
            gguf_file=name,
            config=config,
            dtype=torch.float32,
            quantization_config=GgufConfig(dequantize=True),
        )
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    except (ValueError, NotImplementedError, KeyError, TypeError, OSError) as exc:
        raise UserError(
            f"transformers {transformers.__version__} cannot convert this GGUF file (architecture "
            f"{header.architecture!r}): {exception_line(exc)}",
            path=spec,
        ) from None
    # A GGUF names no longest input, so the tokenizer would say 10**30; the file's context length is it.
    context = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if context and tokenizer.model_max_length > 10**12:
        tokenizer.model_max_length = int(context)
    return model, tokenizer


def _drop_invented_tokens(folder: Path, token_count: int | None) -> None:
    """Remove added tokens past the file's vocabulary from the saved tokenizer.

    transformers' GPT-2 style builder adds its default `<|endoftext|>` when the file has no such
    token; the model has no embedding row for that id, so producing it would crash a forward pass.
    """
    path = folder / "tokenizer.json"
    if token_count is None or not path.is_file():
        return
    data = json.loads(path.read_text(encoding="utf-8"))
    added = data.get("added_tokens") or []
    kept = [t for t in added if isinstance(t, dict) and t.get("id", 0) < token_count]
    if len(kept) != len(added):
        data["added_tokens"] = kept
        path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


def _readable(folder: Path) -> None:
    """Give the saved files the usual permissions (safetensors writes 0600), for a shared cache."""
    umask = os.umask(0)
    os.umask(umask)
    for path in folder.iterdir():
        if path.is_file():
            path.chmod(0o666 & ~umask)

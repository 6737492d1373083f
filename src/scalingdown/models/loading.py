"""Loading a Hugging Face model and its tokenizer from a local directory or a Hub id.

`load_model` is the one way the stages get a model: it decides causal vs seq2seq from the config,
picks device and dtype, readies the tokenizer for batched generation, and turns every way a name
can be wrong into one `UserError` line that names it. A string is tried as a Hub id only when it is
not an existing path and looks like "org/name"; with `HF_HUB_OFFLINE=1` no network is touched.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as hf_logging

from scalingdown.errors import UserError

# Our own progress bars say what is happening; transformers' per-file bars would only add noise.
hf_logging.disable_progress_bar()

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# "org/name" as the Hub spells repository ids; a leading "." or "/" means a path, never an id.
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass
class LoadedModel:
    """A model ready for generation, with what the evaluation stage reports about it."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    is_seq2seq: bool
    device: torch.device
    dtype: torch.dtype
    num_parameters: int
    name_or_path: str


def hub_offline() -> bool:
    """Offline mode as the Hub libraries define it, read now (they read it once, at import)."""
    from huggingface_hub import constants

    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return constants.HF_HUB_OFFLINE or value.strip().upper() in {"1", "ON", "YES", "TRUE"}


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' is the first CUDA GPU when there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, ValueError):
        raise UserError(
            f"device: {device!r} is not a device; use 'auto', 'cpu', 'cuda' or 'cuda:N'"
        ) from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device: {device!r} asked for, but no CUDA GPU is available")
    return resolved


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """'auto' is bfloat16 on a CUDA GPU that supports it, else float32."""
    if dtype == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if dtype not in DTYPES:
        raise UserError(f"dtype: {dtype!r} is not one of auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


def _locate(name_or_path: str) -> tuple[str, bool]:
    """Check the name before anything loads; returns (name, is_hub_id)."""
    if not name_or_path.strip():
        raise UserError("model path: empty; give a local model directory or a Hub id like org/name")
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise UserError("not a Hugging Face model directory (a file, not a folder)", path=name_or_path)
        if not (path / "config.json").is_file():
            raise UserError("not a Hugging Face model directory (no config.json)", path=name_or_path)
        return str(path), False
    if HUB_ID.match(name_or_path):
        return name_or_path, True
    raise UserError("no such model directory (and not a Hub id of the form org/name)", path=name_or_path)


def _hub_failure(name: str, exc: BaseException) -> UserError:
    reason = "offline mode (HF_HUB_OFFLINE) is on" if hub_offline() else str(exc).strip().splitlines()[0]
    return UserError(
        f"not a local directory, and the model could not be fetched from the Hugging Face Hub ({reason}); "
        "give the path of a local copy instead",
        path=name,
    )


def load_model(name_or_path: str, *, device: str = "auto", dtype: str = "auto") -> LoadedModel:
    """Load a causal or seq2seq LM and its tokenizer, in eval mode, on `device` in `dtype`.

    Causal models get left padding (so a batch of prompts ends where generation starts) and, when
    the tokenizer has no pad token, eos as pad.
    """
    name, from_hub = _locate(str(name_or_path))
    target_device = resolve_device(device)
    target_dtype = resolve_dtype(dtype, target_device)
    # Offline, only files already in the local cache are used and nothing waits on the network.
    options = {"local_files_only": True} if from_hub and hub_offline() else {}

    try:
        config = AutoConfig.from_pretrained(name, **options)
    except ValueError as exc:  # an unknown model_type, or a config.json that is not one
        if from_hub and "model_type" not in str(exc):
            raise _hub_failure(name, exc) from None
        first = str(exc).strip().splitlines()[0]
        raise UserError(f"a config the transformers auto classes do not know ({first})", path=name) from None
    except OSError as exc:  # not found, no network, offline mode
        if from_hub:
            raise _hub_failure(name, exc) from None
        raise UserError(f"cannot read the model config ({exc})", path=name) from None

    is_seq2seq = bool(getattr(config, "is_encoder_decoder", False))
    auto_class = AutoModelForSeq2SeqLM if is_seq2seq else AutoModelForCausalLM
    try:
        # device_map puts the weights straight onto the device instead of staging them in CPU memory.
        model = auto_class.from_pretrained(
            name, config=config, dtype=target_dtype, device_map=target_device, **options
        )
        tokenizer = AutoTokenizer.from_pretrained(name, **options)
    except ValueError as exc:  # e.g. a vision model: no causal or seq2seq LM class for its config
        first = str(exc).strip().splitlines()[0]
        raise UserError(f"cannot load as a language model ({first})", path=name) from None
    except OSError as exc:  # weights or tokenizer files missing, or unreachable on the Hub
        if from_hub:
            raise _hub_failure(name, exc) from None
        first = str(exc).strip().splitlines()[0]
        raise UserError(f"incomplete model directory ({first})", path=name) from None

    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise UserError("the tokenizer has neither a pad nor an eos token", path=name)
        tokenizer.pad_token = tokenizer.eos_token
    if not is_seq2seq:
        tokenizer.padding_side = "left"
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id

    model.eval()
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        is_seq2seq=is_seq2seq,
        device=target_device,
        dtype=target_dtype,
        num_parameters=sum(p.numel() for p in model.parameters()),
        name_or_path=str(name_or_path),
    )

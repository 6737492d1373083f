"""Loading a Hugging Face model and its tokenizer from a local directory or a Hub id.

`load_model` is the one way the stages get a model: it decides causal vs seq2seq from the config,
picks device and dtype, readies the tokenizer for batched generation, and turns every way a name
can be wrong into one `UserError` line that names it. A string is tried as a Hub id only when it is
not an existing path and looks like "org/name"; with `HF_HUB_OFFLINE=1` no network is touched.
A saved LoRA student (a PEFT adapter directory) loads too: its base, with the adapter merged in.
A GGUF model (a `.gguf` file, or `pkg:PACKAGE/FILE` inside an installed package) is converted once
into a cached Hugging Face directory (`scalingdown.models.gguf`) and loaded from there, so every
stage, student and teacher takes GGUF models alike.
`load_pretrained` is the shared first half, also used to build students for training.
"""

from __future__ import annotations

import json
import logging
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

# transformers imports torchao when it is installed, which then reports every CUDA kernel library it
# cannot load on a CPU machine and torch warns about its enum registrations: noise, not news.
for _noisy in ("torchao", "torch.utils._pytree"):
    logging.getLogger(_noisy).setLevel(logging.ERROR)

from transformers import (  # noqa: E402 - after the loggers above are quietened
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as hf_logging  # noqa: E402

from scalingdown.errors import UserError  # noqa: E402
from scalingdown.models.gguf_files import PACKAGE_PREFIX, is_gguf_source  # noqa: E402

# Our own progress bars say what is happening; transformers' per-file bars would only add noise.
hf_logging.disable_progress_bar()

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# "org/name" as the Hub spells repository ids; a leading "." or "/" means a path, never an id.
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
ADAPTER_CONFIG = "adapter_config.json"  # what PEFT's save_pretrained writes beside the adapter weights


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
    """Check the name before anything loads; returns (name, is_hub_id). A GGUF model's name is its
    converted directory in the cache (converted now, the first time)."""
    if not name_or_path.strip():
        raise UserError("model path: empty; give a local model directory or a Hub id like org/name")
    if is_gguf_source(name_or_path):
        from scalingdown.models.gguf import materialise

        return str(materialise(name_or_path)), False
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise UserError(
                "not a Hugging Face model directory (a file, not a folder; a GGUF file's name ends in .gguf)",
                path=name_or_path,
            )
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


def is_adapter_dir(path: str | Path) -> bool:
    """True for a saved PEFT adapter (a LoRA student): adapter_config.json and no config.json."""
    path = Path(path).expanduser()
    return (path / ADAPTER_CONFIG).is_file() and not (path / "config.json").is_file()


def load_pretrained(
    name_or_path: str,
    *,
    device: torch.device,
    dtype: torch.dtype,
    quantization_config: object | None = None,
    with_tokenizer: bool = True,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase | None, bool]:
    """The base of `load_model` and of training students: `(model, tokenizer, is_seq2seq)`.

    Causal or seq2seq is read from the config; every failure is one `UserError` line naming the
    model. The model is returned as transformers gives it (no padding side, no eval mode);
    `quantization_config` (e.g. a `BitsAndBytesConfig`) is passed through to `from_pretrained`.
    """
    asked = str(name_or_path)
    name, from_hub = _locate(asked)
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
    extra = {"quantization_config": quantization_config} if quantization_config is not None else {}
    tokenizer = None
    try:
        # device_map puts the weights straight onto the device instead of staging them in CPU memory.
        model = auto_class.from_pretrained(
            name, config=config, dtype=dtype, device_map=device, **options, **extra
        )
        if with_tokenizer:
            tokenizer = AutoTokenizer.from_pretrained(name, **options)
    except ValueError as exc:  # e.g. a vision model: no causal or seq2seq LM class for its config
        first = str(exc).strip().splitlines()[0]
        raise UserError(f"cannot load as a language model ({first})", path=name) from None
    except OSError as exc:  # weights or tokenizer files missing, or unreachable on the Hub
        if from_hub:
            raise _hub_failure(name, exc) from None
        first = str(exc).strip().splitlines()[0]
        raise UserError(f"incomplete model directory ({first})", path=name) from None
    if is_gguf_source(asked):
        # What an adapter trained on this model records as its base (PEFT reads `name_or_path`): the
        # GGUF source, not the cache directory, which may be cleared and is rebuilt from it.
        model.name_or_path = gguf_base_name(asked)
    return model, tokenizer, is_seq2seq


def gguf_base_name(name: str) -> str:
    """A GGUF source as a base model name that means the same from any working directory."""
    if name.strip().startswith(PACKAGE_PREFIX):
        return name.strip()
    return str(Path(name).expanduser().resolve())


def adapter_base(adapter_dir: str | Path) -> str:
    """The base model a saved adapter was trained on, as something `load_pretrained` can find.

    A relative local path is tried from the working directory, then from the adapter directory (so
    a run directory that was moved still loads); a base that is neither a directory nor a Hub id is
    a `UserError` naming both the adapter and the base.
    """
    adapter_dir = Path(adapter_dir).expanduser()
    config_path = adapter_dir / ADAPTER_CONFIG
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read the adapter config ({exc})", path=config_path) from None
    base = config.get("base_model_name_or_path") if isinstance(config, dict) else None
    if not isinstance(base, str) or not base.strip():
        raise UserError("the adapter config names no base model (base_model_name_or_path)", path=config_path)
    if base.strip().startswith(PACKAGE_PREFIX):
        return base  # a file inside an installed package: no path to resolve
    candidate = Path(base).expanduser()
    # A GGUF base is a file (converted when it loads); any other local base is a directory.
    exists = Path.is_file if is_gguf_source(base) else Path.is_dir
    if exists(candidate):
        return str(candidate)
    if not candidate.is_absolute() and exists(adapter_dir / candidate):
        return str(adapter_dir / candidate)
    if not candidate.exists() and HUB_ID.match(base):
        return base
    raise UserError(
        f"the adapter's base model {base} cannot be found (no such directory, and not a Hub id); "
        "put the base model back there or edit base_model_name_or_path in adapter_config.json",
        path=adapter_dir,
    )


def _apply_adapter(
    adapter_dir: str, device: torch.device, dtype: torch.dtype
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, bool]:
    """Base model + the saved LoRA adapter, merged into plain weights (no adapter overhead when
    generating). The tokenizer comes from the adapter directory, or the base when it has none."""
    from peft import PeftModel  # only adapter directories need peft

    base = adapter_base(adapter_dir)
    try:
        model, tokenizer, is_seq2seq = load_pretrained(base, device=device, dtype=dtype)
    except UserError as exc:  # say which adapter wanted it, not only which base failed
        raise UserError(f"cannot load the adapter's base model: {exc}", path=adapter_dir) from None
    try:
        with warnings.catch_warnings():
            # PEFT asks transformers a deprecated question; the warning says nothing to our user.
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
            model = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    except (OSError, ValueError, RuntimeError, KeyError) as exc:  # missing weights, mismatched shapes
        first = str(exc).strip().splitlines()[0]
        raise UserError(
            f"cannot apply the adapter to its base model {base} ({first})", path=adapter_dir
        ) from None
    if (Path(adapter_dir) / "tokenizer_config.json").is_file():
        try:
            tokenizer = AutoTokenizer.from_pretrained(adapter_dir)
        except (OSError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0]
            raise UserError(f"cannot read the student's tokenizer ({first})", path=adapter_dir) from None
    return model, tokenizer, is_seq2seq


def load_model(
    name_or_path: str, *, device: str = "auto", dtype: str = "auto", quantization_config: object | None = None
) -> LoadedModel:
    """Load a causal or seq2seq LM and its tokenizer, in eval mode, on `device` in `dtype`.

    `name_or_path` is a model directory, a Hub id, a GGUF model (a `.gguf` file or
    `pkg:PACKAGE/FILE`, converted once into the cache), or a saved LoRA student (adapter_config.json
    and no config.json): its base is loaded, the adapter applied and merged. Causal models get left
    padding (so a batch of prompts ends where generation starts) and, when the tokenizer has no pad
    token, eos as pad.
    """
    target_device = resolve_device(device)
    target_dtype = resolve_dtype(dtype, target_device)
    name = str(name_or_path)
    if name.strip() and is_adapter_dir(name):
        if quantization_config is not None:
            raise UserError(
                "a LoRA adapter cannot be loaded quantised (its base would be merged into 4/8-bit weights); "
                "save the student with `merge: true` and evaluate its merged/ folder",
                path=name,
            )
        model, tokenizer, is_seq2seq = _apply_adapter(
            str(Path(name).expanduser()), target_device, target_dtype
        )
    else:
        model, tokenizer, is_seq2seq = load_pretrained(
            name, device=target_device, dtype=target_dtype, quantization_config=quantization_config
        )

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
        name_or_path=name,
    )

"""Student models ready to train: a base LM with LoRA, QLoRA (4-bit base + LoRA) or every weight free.

`load_student` loads the base from a Hub id or a local directory through the same code as
evaluation (`scalingdown.models.loading.load_pretrained`), so causal vs seq2seq is read from the
model's config and a bad name is one `UserError` line. It readies the tokenizer for training
(right padding, eos as pad when there is none) and wires PEFT:

- lora:  `peft.LoraConfig(r, lora_alpha, lora_dropout, target_modules, task_type)` + `get_peft_model`;
         only the `lora_A` / `lora_B` matrices train, the base stays frozen.
- qlora: the base in 4-bit NF4 (`BitsAndBytesConfig`, double quantisation, as in the QLoRA paper),
         `prepare_model_for_kbit_training`, then the same LoRA wiring. Needs CUDA and bitsandbytes.
- full:  every parameter trains.

With `gradient_checkpointing` (lora, full) each layer's activations are recomputed in the backward
pass instead of kept (`enable_checkpointing`); qlora turns it on anyway.

Explicit target module names are checked against the model before PEFT sees them, so a typo names
the config key and the model's linear modules instead of failing deep inside PEFT.
"""

from __future__ import annotations

import importlib.util
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from scalingdown.config import LoraSettings
from scalingdown.errors import UserError
from scalingdown.models.loading import load_pretrained, resolve_device

METHODS = ("lora", "qlora", "full")
ALL_LINEAR = "all-linear"  # PEFT's own shorthand: every linear layer except the output head


@dataclass
class Student:
    """A model to train with what the train stage records about it.

    `model` is a `peft.PeftModel` for lora/qlora, the plain transformers model for full. The
    parameter counts are taken once, after PEFT wiring: `total_parameters` includes the adapter.
    """

    model: nn.Module
    tokenizer: object
    is_seq2seq: bool
    method: str
    base_model: str
    trainable_parameters: int
    total_parameters: int


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; tied weights count once.

    A bitsandbytes 4-bit weight stores two values per byte of its storage type, so its `numel()`
    is scaled back to the number of weights it stands for (as PEFT's `get_nb_trainable_parameters`).
    """
    trainable = total = 0
    for param in model.parameters():
        count = param.numel()
        if param.__class__.__name__ == "Params4bit":
            storage = getattr(param, "quant_storage", None)
            count *= 2 * (storage.itemsize if storage is not None else 1)
        total += count
        if param.requires_grad:
            trainable += count
    return trainable, total


def linear_module_names(model: nn.Module) -> list[str]:
    """Short names (last path component) of the model's linear layers, in order of first appearance,
    without the output head: the names a `target_modules` list may use."""
    from transformers.pytorch_utils import Conv1D  # GPT-2's linear layers

    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    names: dict[str, None] = {}
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, Conv1D)) and module is not head:
            names.setdefault(name.rsplit(".", 1)[-1], None)
    return list(names)


def check_target_modules(model: nn.Module, targets: list[str] | str, *, model_name: str, where: str) -> None:
    """Fail with one line when a target matches no module of `model`, by PEFT's own matching rule:
    a list entry matches a module whose full name equals it or ends with "." + it; a single string
    other than 'all-linear' is a regular expression that must match a full module name."""
    if isinstance(targets, str) and targets.lower() == ALL_LINEAR:
        return
    module_names = [name for name, _ in model.named_modules() if name]
    if isinstance(targets, str):
        try:
            pattern = re.compile(targets)
        except re.error as exc:
            raise UserError(
                f"{where}.lora.target_modules: {targets!r} is not a regular expression ({exc})"
            ) from None
        missing = [] if any(pattern.fullmatch(name) for name in module_names) else [targets]
    else:
        if not targets:
            raise UserError(f"{where}.lora.target_modules: empty; give module names or 'all-linear'")
        missing = [
            t for t in targets if not any(name == t or name.endswith(f".{t}") for name in module_names)
        ]
    if missing:
        linear = ", ".join(linear_module_names(model)) or "none"
        raise UserError(
            f"{where}.lora.target_modules: {missing[0]!r} matches no module of {model_name} "
            f"(linear modules: {linear})"
        )


def default_device() -> torch.device:
    """This process's GPU under `accelerate launch` / torchrun (LOCAL_RANK), else the first CUDA GPU,
    else the CPU. Each process must load onto its own GPU: a 4-bit model cannot be moved later."""
    local_rank = os.environ.get("LOCAL_RANK")
    if torch.cuda.is_available() and local_rank is not None and local_rank.isdigit():
        return torch.device("cuda", int(local_rank) % torch.cuda.device_count())
    return resolve_device("auto")


def _qlora_ready(where: str) -> None:
    if not torch.cuda.is_available() or importlib.util.find_spec("bitsandbytes") is None:
        raise UserError(f"{where}.method: qlora needs a CUDA GPU and `pip install bitsandbytes`")


def _four_bit_config(compute_dtype: torch.dtype):
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
    )


def _with_lora(model: nn.Module, lora: LoraSettings, *, is_seq2seq: bool, model_name: str, where: str):
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers.pytorch_utils import Conv1D

    check_target_modules(model, lora.target_modules, model_name=model_name, where=where)
    config = LoraConfig(
        # GPT-2 style models store linear weights transposed (Conv1D); PEFT must know, or warns and guesses.
        fan_in_fan_out=any(isinstance(m, Conv1D) for m in model.modules()),
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type=TaskType.SEQ_2_SEQ_LM if is_seq2seq else TaskType.CAUSAL_LM,
    )
    try:
        with warnings.catch_warnings():
            # PEFT asks transformers a deprecated question; the warning says nothing to our user.
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
            return get_peft_model(model, config)
    except ValueError as exc:  # e.g. a target that is a norm or another layer type LoRA cannot wrap
        first = str(exc).strip().splitlines()[0]
        raise UserError(f"{where}.lora.target_modules: {first}") from None


def enable_checkpointing(model: nn.Module, *, where: str) -> None:
    """Activation checkpointing on every layer, non-reentrant (torch's recommended variant: it needs
    no input that requires grad and works with inputs that carry none).

    transformers then also makes the input embeddings' output require grad (its
    `enable_input_require_grads`): with a frozen base (LoRA) nothing before the first layer would,
    and a checkpointed layer must still pass gradients back to the adapters inside it.
    """
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise UserError(
            f"{where}.hyperparameters.gradient_checkpointing: {type(model).__name__} does not support it"
        )
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x; the old name is deprecated
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def load_student(
    base: str,
    *,
    method: str,
    lora: LoraSettings,
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    gradient_checkpointing: bool = False,
    where: str = "students[0]",
) -> Student:
    """Load `base` (Hub id or local directory) as a student to train with `method`.

    `device` None is `default_device()`. `dtype` is the weights' dtype for lora and full; for
    qlora the frozen base is 4-bit and `dtype` is the compute dtype (float32 is replaced by
    bfloat16, or float16 on a GPU without it). A local `base` is recorded
    as an absolute path, so the saved adapter finds its base from any working directory. The
    model comes back in train mode; `where` is the config key that errors name.
    `gradient_checkpointing` turns on activation checkpointing for lora and full (qlora always has it).
    """
    if method not in METHODS:
        raise UserError(f"{where}.method: {method!r} is not one of {', '.join(METHODS)}")
    if method == "qlora":
        _qlora_ready(where)  # before anything heavy loads
    target_device = device if device is not None else default_device()
    local = Path(base).expanduser()
    name = str(local.resolve()) if local.is_dir() else base

    quantization = None
    if method == "qlora":
        if target_device.type != "cuda":
            raise UserError(f"{where}.method: qlora needs a CUDA GPU; the student is on {target_device}")
        if dtype == torch.float32:
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        quantization = _four_bit_config(dtype)
    model, tokenizer, is_seq2seq = load_pretrained(
        name, device=target_device, dtype=dtype, quantization_config=quantization
    )

    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise UserError("the tokenizer has neither a pad nor an eos token", path=name)
        tokenizer.pad_token = tokenizer.eos_token
    # Training batches pad after the text: positions stay those of an unpadded sequence, and the
    # padded label positions are masked out of the loss anyway.
    tokenizer.padding_side = "right"
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id

    if gradient_checkpointing and method != "qlora":
        enable_checkpointing(model, where=where)
    if method == "full":
        for param in model.parameters():
            param.requires_grad_(True)
    else:
        if method == "qlora":
            from peft import prepare_model_for_kbit_training

            # Freezes the base, keeps norms in float32 and turns on gradient checkpointing (QLoRA's memory
            # saving); the inputs' embeddings then require grad so checkpointed blocks still backpropagate.
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
        model = _with_lora(model, lora, is_seq2seq=is_seq2seq, model_name=base, where=where)
    model.train()
    trainable, total = count_parameters(model)
    return Student(
        model=model,
        tokenizer=tokenizer,
        is_seq2seq=is_seq2seq,
        method=method,
        base_model=name,
        trainable_parameters=trainable,
        total_parameters=total,
    )

"""Quantised rungs: a trained student evaluated again with smaller weights, and its size in bytes.

"How small?" has two answers: in parameters and in bytes. A student of N parameters in int8 takes a
quarter of the bytes of the same student in float32, and may lose some accuracy doing so; the
report shows both sizes and the accuracy lost to quantisation by a paired test.

Kinds (`eval.quantize`):
- `int8`: dynamic int8 quantisation of every linear layer except the output head, on the CPU:
  torchao's `Int8DynamicActivationInt8WeightConfig` when torchao is installed (the maintained API),
  else `torch.ao.quantization.quantize_dynamic` (deprecated in torch 2.13 but working);
- `int8-bnb`, `nf4`: bitsandbytes 8-bit and 4-bit weights on a CUDA GPU (the model is reloaded
  through transformers' `BitsAndBytesConfig`).
A kind that cannot run here (no GPU, package missing) raises `QuantisationUnavailable` with the
reason, and the evaluation records it as skipped; nothing else fails.

Size: `memory_bytes` sums the bytes of every parameter and buffer as stored (int8 data plus their
scales for a quantised layer): the weights' footprint in memory, and within a few kilobytes of
metadata what a checkpoint of them takes on disk.
"""

from __future__ import annotations

import importlib.util
import warnings

import torch
from torch import nn

KINDS = ("int8", "int8-bnb", "nf4")


class QuantisationUnavailable(Exception):
    """This kind of quantisation cannot run here; the message says why."""


def _tensor_bytes(tensor: torch.Tensor) -> int:
    """Bytes a tensor holds, looking inside tensor subclasses (torchao keeps int8 data and scales)."""
    inner = getattr(tensor, "__tensor_flatten__", None)
    if inner is not None and type(tensor) not in (torch.Tensor, nn.Parameter):
        names, _ = tensor.__tensor_flatten__()
        return sum(_tensor_bytes(getattr(tensor, name)) for name in names)
    if tensor.is_quantized:
        return tensor.int_repr().element_size() * tensor.numel()
    return tensor.element_size() * tensor.numel()


def memory_bytes(model: nn.Module) -> int:
    """Bytes of the model's weights and buffers as they sit in memory (shared tensors once)."""
    seen, total = set(), 0
    alive = []  # unpacked tensors are new objects: keep them so that no id is reused while counting
    for module in model.modules():
        tensors = list(module.parameters(recurse=False)) + list(module.buffers(recurse=False))
        # torch.ao dynamic-quantised linear layers keep weights in a LinearPackedParams submodule
        # (its own `_packed_params` is the opaque TorchScript object, skipped here)
        packed = getattr(module, "_packed_params", None)
        if isinstance(packed, nn.Module) and hasattr(packed, "_weight_bias"):
            weight, bias = packed._weight_bias()
            tensors += [weight] + ([bias] if bias is not None else [])
        alive.append(tensors)
        for tensor in tensors:
            if id(tensor) not in seen:
                seen.add(id(tensor))
                total += _tensor_bytes(tensor)
    return total


def _linear_but_head(model: nn.Module):
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return lambda module, _fqn="": isinstance(module, nn.Linear) and module is not head


def quantise_int8(model: nn.Module) -> tuple[nn.Module, str]:
    """Dynamic int8 quantisation of the linear layers (not the output head), in place; returns the
    model and the implementation used."""
    if next(model.parameters()).device.type != "cpu":
        raise QuantisationUnavailable("int8 dynamic quantisation runs on the CPU; the model is on a GPU")
    if importlib.util.find_spec("torchao") is not None:
        import logging

        logging.getLogger("torchao").setLevel(logging.ERROR)  # it reports CUDA kernels it cannot load
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_(model, Int8DynamicActivationInt8WeightConfig(), filter_fn=_linear_but_head(model))
        return model, "torchao Int8DynamicActivationInt8Weight"
    from torch.ao.quantization import quantize_dynamic

    keep = _linear_but_head(model)
    names = {name for name, module in model.named_modules() if keep(module)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "deprecated and will be removed": still the only CPU path here
        quantize_dynamic(model, names, dtype=torch.qint8, inplace=True)
    return model, "torch.ao quantize_dynamic (qint8)"


def bitsandbytes_config(kind: str):
    """transformers' BitsAndBytesConfig for `int8-bnb` / `nf4`, or QuantisationUnavailable."""
    if not torch.cuda.is_available():
        raise QuantisationUnavailable(f"{kind} needs a CUDA GPU (bitsandbytes)")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise QuantisationUnavailable(f"{kind} needs `pip install bitsandbytes`")
    from transformers import BitsAndBytesConfig

    if kind == "int8-bnb":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16
    )

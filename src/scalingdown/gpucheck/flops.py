"""Model FLOPs per token and model FLOPs utilisation (MFU).

Counted the usual way (Kaplan et al. 2020; PaLM, Chowdhery et al. 2022, appendix B), per token of a
sequence of `context` tokens:

- forward = 2 x (weights of every matrix multiply, the output head included even when it shares the
  embedding's weights) + 4 x layers x context x attention width (scores and the weighted sum, full
  square as in PaLM; a causal kernel skips about half of it, so MFU is slightly flattering);
- full fine-tuning = 3 x forward (the backward pass costs two forwards: input and weight gradients);
- LoRA = 2 x forward + 2 x trainable weights: the frozen base needs the input gradients only, the
  adapters need both.

MFU = achieved FLOPs/s / the GPU's peak dense bf16 tensor throughput. Peaks are the vendors' data
sheet figures without sparsity; `--peak-tflops` overrides, and an unknown GPU gets no MFU (None)
rather than a guess. Recomputation (gradient checkpointing) is not counted, as MFU asks.
"""

from __future__ import annotations

from torch import nn

# Dense bf16 tensor-core peak, TFLOP/s, from the data sheets. First match wins: specific names first.
PEAK_BF16_TFLOPS = (
    ("GH200", 989.4),
    ("H200", 989.4),
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.4),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("A800", 312.0),
    ("L40S", 362.1),
    ("L40", 181.0),
    ("L4", 121.0),
    ("A10G", 70.0),
    ("A10", 125.0),
    ("A6000", 154.8),
    ("RTX 4090", 165.2),
    ("RTX 3090", 71.0),
)


def peak_tflops(device_name: str) -> float | None:
    """Peak dense bf16 TFLOP/s of a GPU named like `torch.cuda.get_device_name()`, or None if unknown."""
    for key, value in PEAK_BF16_TFLOPS:
        if key.lower() in device_name.lower():
            return value
    return None


def matmul_weights(model: nn.Module) -> int:
    """Weights that take part in a matrix multiply per token: every `nn.Linear`'s weight matrix (the
    output head counted even when tied to the embedding, whose lookup is not a multiply)."""
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))


def forward_flops_per_token(model: nn.Module, context: int) -> int:
    """Forward FLOPs per token at sequence length `context` (see the module docstring)."""
    config = model.config
    heads = config.num_attention_heads
    width = getattr(config, "head_dim", None) or config.hidden_size // heads
    attention = 4 * config.num_hidden_layers * context * heads * width
    return 2 * matmul_weights(model) + attention


def training_flops_per_token(model: nn.Module, context: int, *, trainable: int, lora: bool) -> int:
    """FLOPs per trained token: 3 x forward for full fine-tuning, 2 x forward + 2 x trainable for LoRA."""
    forward = forward_flops_per_token(model, context)
    return 2 * forward + 2 * trainable if lora else 3 * forward


def mfu(tokens_per_second: float, flops_per_token: int, peak: float | None) -> float | None:
    """Achieved / peak FLOPs (0..1), or None when the peak is unknown."""
    if not peak:
        return None
    return tokens_per_second * flops_per_token / (peak * 1e12)

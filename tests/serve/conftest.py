"""The tiny model every `serve` test serves: built once per session, on CPU, with no download."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from scalingdown.config import TinyModelConfig
from scalingdown.data.synthetic import generate
from scalingdown.evaluate.prompts import worked_example


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    """A tiny Llama (context 256) whose weights are perturbed (seeded).

    Freshly initialised with tied embeddings it only repeats its last input token, which would make
    every equality test trivially true; the noise gives each prompt its own varied continuation.
    """
    from transformers import AutoModelForCausalLM

    from scalingdown.models.tiny import build_tiny

    texts = [worked_example(p) for p in generate(200, seed=1, split="train")]
    config = TinyModelConfig(hidden_size=32, num_layers=2, num_heads=2, vocab_size=384, max_positions=256)
    out = build_tiny(config, texts, tmp_path_factory.mktemp("serve") / "model", seed=0, progress=False)
    model = AutoModelForCausalLM.from_pretrained(out)
    noise = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" not in name:
                param.add_(torch.randn(param.shape, generator=noise) * 0.5)
    model.save_pretrained(out)
    return out


def questions(n: int) -> list[str]:
    """`n` synthetic test questions as completion prompts (of different lengths)."""
    return [f"Question: {p.question}\nAnswer:" for p in generate(n, seed=2, split="test")]

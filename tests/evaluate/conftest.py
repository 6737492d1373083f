"""Tiny real models for the evaluation tests, built once per session from a config in code."""

from __future__ import annotations

from pathlib import Path

import pytest

from scalingdown.config import TinyModelConfig
from scalingdown.data.synthetic import generate
from scalingdown.evaluate.prompts import worked_example


@pytest.fixture(scope="session")
def synthetic_problems():
    train = generate(300, seed=1, split="train")
    test = generate(24, seed=2, split="test", id_prefix="synthetic-test")
    return train, test


def _build(tmp_path_factory, arch: str, synthetic_problems, steps: int = 0) -> Path:
    from scalingdown.models.tiny import build_tiny

    train, _ = synthetic_problems
    texts = [worked_example(p) for p in train]
    out = tmp_path_factory.mktemp(f"tiny-{arch}") / "model"
    config = TinyModelConfig(
        arch=arch,
        hidden_size=32,
        num_layers=2,
        num_heads=2,
        vocab_size=384,
        max_positions=256,
        pretrain_steps=steps,
    )
    return build_tiny(config, texts, out, seed=0, progress=False)


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory, synthetic_problems) -> Path:
    return _build(tmp_path_factory, "llama", synthetic_problems)


@pytest.fixture(scope="session")
def tiny_t5(tmp_path_factory, synthetic_problems) -> Path:
    return _build(tmp_path_factory, "t5", synthetic_problems)

"""Fixtures shared by the teach tests: one tiny local teacher, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from scalingdown.config import TinyModelConfig
from scalingdown.data.synthetic import generate
from scalingdown.evaluate.prompts import worked_example


@pytest.fixture(scope="session")
def problems():
    return generate(40, seed=3, split="train")


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory, problems) -> Path:
    """A 2-layer Llama (width 32) with a tokenizer trained on the problems' worked solutions, pre-trained
    on them briefly so that what it writes depends on the prompt (an untrained one writes one string)."""
    from scalingdown.models.tiny import build_tiny

    config = TinyModelConfig(
        hidden_size=32, num_layers=2, num_heads=2, vocab_size=384, max_positions=256, pretrain_steps=150
    )
    out = tmp_path_factory.mktemp("hf-teacher") / "model"
    return build_tiny(config, [worked_example(p) for p in problems], out, seed=0, progress=False)

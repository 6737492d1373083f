"""int8 quantisation of a tiny real model, by torchao where installed and by torch.ao otherwise."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from scalingdown.evaluate.quantize import memory_bytes, quantise_int8
from scalingdown.models.loading import load_model


def _without_torchao(monkeypatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "torchao" else real(name, *a)
    )


@pytest.mark.parametrize("implementation", ["torchao", "torch.ao"])
def test_int8_shrinks_the_linear_layers_and_the_model_still_runs(tiny_llama, monkeypatch, implementation):
    if implementation == "torchao" and importlib.util.find_spec("torchao") is None:
        pytest.skip("torchao is not installed")
    if implementation == "torch.ao":
        _without_torchao(monkeypatch)
    loaded = load_model(str(tiny_llama))
    model = loaded.model.eval()
    before = memory_bytes(model)
    linear = sum(
        m.weight.numel()
        for m in model.modules()
        if isinstance(m, torch.nn.Linear) and m is not model.get_output_embeddings()
    )
    ids = loaded.tokenizer("Tom has 3 apples.", return_tensors="pt").input_ids
    with torch.no_grad():
        reference = model(ids).logits
    model, used = quantise_int8(model)
    assert used.startswith(implementation)
    after = memory_bytes(model)
    # float32 -> int8 saves 3 of every 4 bytes of each quantised weight, less a little for the scales
    saved = before - after
    assert 0.6 * 3 * linear < saved <= 3 * linear
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape == reference.shape
    assert not torch.equal(logits, reference)  # it really runs quantised
    assert torch.allclose(logits, reference, atol=0.5)

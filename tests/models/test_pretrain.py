"""Pretraining loop: the loss falls, padding is masked, runs are reproducible for a seed."""

from __future__ import annotations

import copy
import random

import pytest
import torch

from scalingdown.models.pretrain import pretrain_causal_lm, split_source_target, warmup_cosine
from scalingdown.models.tiny import build_model, train_tokenizer


def addition_texts(n: int = 200, seed: int = 0) -> list[str]:
    """A small synthetic corpus: "Question: 3 + 4 = ?\\nAnswer: 7"."""
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        a, b = rng.randint(0, 9), rng.randint(0, 9)
        texts.append(f"Question: {a} + {b} = ?\nAnswer: {a + b}")
    return texts


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return addition_texts()


@pytest.fixture(scope="module")
def tokenizer(corpus):
    return train_tokenizer(corpus, vocab_size=300)


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("arch", ["llama", "t5"])
def test_loss_falls_on_a_synthetic_corpus(arch, corpus, tokenizer):
    model = build_model(arch, tokenizer, hidden_size=64, seed=0)
    losses = pretrain_causal_lm(model, tokenizer, corpus, steps=150, seed=0, progress=False)
    assert len(losses) == 150
    assert all(torch.isfinite(torch.tensor(losses)))
    assert mean(losses[-20:]) < 0.5 * mean(losses[:5])
    assert not model.training

    # The format is learned: the answer the model writes starts with a digit.
    prompt = tokenizer("Question: 3 + 4 = ?\nAnswer:", return_tensors="pt")
    out = model.generate(**prompt, max_new_tokens=3, do_sample=False)
    new_tokens = out[0] if arch == "t5" else out[0, prompt["input_ids"].shape[1] :]
    assert tokenizer.decode(new_tokens, skip_special_tokens=True).strip()[:1].isdigit()


def test_same_seed_same_losses_other_seed_differs(corpus, tokenizer):
    def run(seed: int) -> list[float]:
        model = build_model("gpt2", tokenizer, hidden_size=32, seed=0)
        return pretrain_causal_lm(model, tokenizer, corpus, steps=15, batch_size=8, seed=seed, progress=False)

    first, again, other = run(0), run(0), run(1)
    assert first == again
    assert first != other


def test_padding_is_masked_from_the_loss(tokenizer):
    # Texts of very different lengths in one batch: the first step's loss must equal the token-weighted
    # mean cross-entropy of each text computed alone, without any padding.
    texts = ["Question: 1 + 1 = ?\nAnswer: 2", "x", "Question: 9 + 9 = ? 9 + 9 = ? 9 + 9 = ?\nAnswer: 18"]
    model = build_model("llama", tokenizer, hidden_size=32, seed=3)
    reference = copy.deepcopy(model)
    losses = pretrain_causal_lm(model, tokenizer, texts, steps=1, batch_size=len(texts), progress=False)

    total, count = 0.0, 0
    with torch.no_grad():
        for text in texts:
            ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            logits = reference(torch.tensor([ids])).logits[0, :-1]
            total += torch.nn.functional.cross_entropy(logits, torch.tensor(ids[1:]), reduction="sum").item()
            count += len(ids) - 1
    assert losses[0] == pytest.approx(total / count, rel=1e-4)


def test_texts_longer_than_max_length_are_truncated(corpus, tokenizer):
    long_texts = [" ".join(corpus[:40])] * 4
    model = build_model("gpt2", tokenizer, hidden_size=32, max_positions=64, seed=0)
    # Without truncation to 64 tokens GPT-2's position table would overflow.
    losses = pretrain_causal_lm(
        model, tokenizer, long_texts, steps=2, batch_size=2, max_length=64, progress=False
    )
    assert len(losses) == 2


def test_split_source_target_at_answer_marker():
    source, target = split_source_target("Question: 3 + 4 = ?\nAnswer: 3 + 4 = 7. The answer is 7.")
    assert source == "Question: 3 + 4 = ?\nAnswer:"
    assert target == " 3 + 4 = 7. The answer is 7."
    # Without the marker: a cut at a whitespace near the middle, nothing lost.
    text = "one two three four five six"
    source, target = split_source_target(text)
    assert source + target == text
    assert target.startswith(" ") and 0 < len(source) < len(text)


def test_warmup_then_cosine_to_floor():
    factors = [warmup_cosine(step, total=100, warmup=10, floor=0.1) for step in range(100)]
    assert factors[0] == pytest.approx(0.1)
    assert factors[9] == pytest.approx(1.0)
    assert all(factors[i] <= factors[i + 1] for i in range(9))
    assert all(factors[i] >= factors[i + 1] for i in range(9, 99))
    assert factors[-1] == pytest.approx(0.1, abs=1e-3)


def test_zero_steps_trains_nothing(corpus, tokenizer):
    model = build_model("llama", tokenizer, hidden_size=32, seed=0)
    before = copy.deepcopy(model.state_dict())
    assert pretrain_causal_lm(model, tokenizer, corpus, steps=0, progress=False) == []
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())

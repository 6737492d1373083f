"""Batched generation gives the same greedy text as one prompt at a time, in the caller's order."""

from __future__ import annotations

import torch

from scalingdown.evaluate.generation import DecodingSettings, generate_texts, truncate_at_stop
from scalingdown.evaluate.prompts import zero_shot
from scalingdown.models.loading import load_model


def _one_at_a_time(loaded, prompts, max_new_tokens):
    """Plain reference: one unpadded prompt per `generate` call, greedy, no stop strings."""
    texts = []
    for prompt in prompts:
        ids = loaded.tokenizer(prompt, return_tensors="pt")
        with torch.inference_mode():
            out = loaded.model.generate(
                **ids,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=loaded.tokenizer.pad_token_id,
            )
        start = 1 if loaded.is_seq2seq else ids["input_ids"].shape[1]
        texts.append(loaded.tokenizer.decode(out[0, start:], skip_special_tokens=True))
    return texts


def test_batched_greedy_equals_one_at_a_time(tiny_llama, synthetic_problems):
    _, test = synthetic_problems
    loaded = load_model(str(tiny_llama), device="cpu")
    prompts = [zero_shot(p) for p in test[:12]]
    settings = DecodingSettings(max_new_tokens=20, batch_size=5)
    batched = generate_texts(loaded, prompts, settings, progress=False)
    reference = _one_at_a_time(loaded, prompts, 20)
    assert [g.texts[0] for g in batched] == reference
    assert all(g.new_tokens[0] <= 20 and g.prompt_tokens > 0 for g in batched)


def test_seq2seq_batched_equals_one_at_a_time(tiny_t5, synthetic_problems):
    _, test = synthetic_problems
    loaded = load_model(str(tiny_t5), device="cpu")
    assert loaded.is_seq2seq
    prompts = [zero_shot(p) for p in test[:6]]
    batched = generate_texts(
        loaded, prompts, DecodingSettings(max_new_tokens=12, batch_size=4), progress=False
    )
    assert [g.texts[0] for g in batched] == _one_at_a_time(loaded, prompts, 12)


def test_stop_strings_cut_the_text_and_end_the_row(tiny_llama, synthetic_problems):
    _, test = synthetic_problems
    loaded = load_model(str(tiny_llama), device="cpu")
    prompts = [zero_shot(p) for p in test[:8]]
    free = generate_texts(loaded, prompts, DecodingSettings(max_new_tokens=30), progress=False)
    # Stop at a character the untrained model does emit: the first character of each row's output.
    first_chars = {g.texts[0].strip()[:1] for g in free if g.texts[0].strip()}
    stop = tuple(sorted(first_chars))[:1]
    stopped = generate_texts(loaded, prompts, DecodingSettings(max_new_tokens=30, stop=stop), progress=False)
    for g_free, g_stop in zip(free, stopped, strict=False):
        assert stop[0] not in g_stop.texts[0]
        assert g_free.texts[0].startswith(g_stop.texts[0])
        if stop[0] in g_free.texts[0]:
            assert g_stop.new_tokens[0] < g_free.new_tokens[0]


def test_skip_and_on_batch_support_resuming(tiny_llama, synthetic_problems):
    _, test = synthetic_problems
    loaded = load_model(str(tiny_llama), device="cpu")
    prompts = [zero_shot(p) for p in test[:7]]
    seen: list[int] = []
    results = generate_texts(
        loaded,
        prompts,
        DecodingSettings(max_new_tokens=5, batch_size=2),
        skip={0, 3},
        on_batch=lambda idx, gens: seen.extend(idx),
        progress=False,
    )
    assert results[0] is None and results[3] is None
    assert sorted(seen) == [1, 2, 4, 5, 6]


def test_sampling_gives_several_samples_reproducibly(tiny_llama, synthetic_problems):
    _, test = synthetic_problems
    loaded = load_model(str(tiny_llama), device="cpu")
    prompts = [zero_shot(p) for p in test[:3]]
    settings = DecodingSettings(max_new_tokens=8, temperature=1.0, num_samples=4, seed=3)
    first = generate_texts(loaded, prompts, settings, progress=False)
    again = generate_texts(loaded, prompts, settings, progress=False)
    assert all(len(g.texts) == 4 for g in first)
    assert [g.texts for g in first] == [g.texts for g in again]
    assert any(len(set(g.texts)) > 1 for g in first)


def test_long_prompts_are_cut_from_the_left(tiny_llama, synthetic_problems):
    _, test = synthetic_problems
    loaded = load_model(str(tiny_llama), device="cpu")
    long_prompt = " ".join(p.question for p in test) * 3 + "\n" + zero_shot(test[0])
    out = generate_texts(loaded, [long_prompt], DecodingSettings(max_new_tokens=16), progress=False)
    assert out[0].truncated


def test_truncate_at_stop():
    assert truncate_at_stop("a 1\n\nQuestion: b", ("Question:", "\n\n")) == "a 1"
    assert truncate_at_stop("no stop here", ("Question:",)) == "no stop here"
    assert truncate_at_stop("x", ("",)) == "x"

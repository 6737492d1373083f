"""Batched generation for Hugging Face causal and seq2seq models.

Prompts are sorted by token length so each batch pads little, generated in batches with the KV cache
(left padding for causal models), and returned in the caller's order. Greedy by default; sampling
with `num_samples > 1` for self-consistency. Stop strings end a row early (transformers'
`StopStringCriteria`); the text is cut at the first stop string so no stop text leaks into answers.
The teach stage's `hf` backend reuses `generate_texts`; `scalingdown serve` passes `should_stop` so the
work of a client that has gone away ends at the next decoding step.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList

from scalingdown.models.loading import LoadedModel


@dataclass(frozen=True)
class DecodingSettings:
    """How to decode: greedy when temperature == 0, else sampling with `num_samples` per prompt."""

    max_new_tokens: int = 256
    stop: tuple[str, ...] = ()
    temperature: float = 0.0
    top_p: float = 1.0
    num_samples: int = 1
    batch_size: int = 32
    seed: int = 0


@dataclass
class Generation:
    """The outputs for one prompt: `num_samples` texts and their generated token counts."""

    texts: list[str]
    new_tokens: list[int]
    seconds: float = 0.0  # this prompt's share of its batch's wall time
    prompt_tokens: int = 0
    truncated: bool = False  # the prompt was cut from the left to fit the model's context
    extra: dict = field(default_factory=dict)


class GenerationStopped(RuntimeError):
    """`generate_texts` ended early because its `should_stop()` returned True."""


class _StopWhen(StoppingCriteria):
    """Ends every row at the next decoding step once `should_stop()` is true (it is called each step)."""

    def __init__(self, should_stop: Callable[[], bool]):
        self.should_stop = should_stop

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        return torch.full(
            (input_ids.shape[0],), self.should_stop(), dtype=torch.bool, device=input_ids.device
        )


def truncate_at_stop(text: str, stop: Sequence[str]) -> str:
    """Cut `text` at the earliest occurrence of any stop string."""
    cut = len(text)
    for s in stop:
        if s:
            index = text.find(s)
            if index != -1:
                cut = min(cut, index)
    return text[:cut]


def context_limit(loaded: LoadedModel) -> int | None:
    """Longest sequence the model accepts, from its config (None when it states no limit)."""
    config = loaded.model.config
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _generation_config(loaded: LoadedModel, settings: DecodingSettings) -> GenerationConfig:
    tokenizer = loaded.tokenizer
    sampling = settings.temperature > 0
    config = GenerationConfig(
        max_new_tokens=settings.max_new_tokens,
        do_sample=sampling,
        num_return_sequences=settings.num_samples,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        stop_strings=list(settings.stop) or None,
    )
    if sampling:
        config.temperature = settings.temperature
        config.top_p = settings.top_p
    if loaded.is_seq2seq:
        config.decoder_start_token_id = loaded.model.config.decoder_start_token_id
    return config


def _count_new_tokens(rows: torch.Tensor, pad_id: int | None, eos_id: int | None) -> list[int]:
    """Tokens generated per row, up to and including the first EOS; padding after it is not counted.

    rows: (batch, new_len) token ids of the generated part only.
    """
    counts = []
    for row in rows.tolist():
        n = 0
        for token in row:
            if token == eos_id:
                n += 1
                break
            if token == pad_id and pad_id != eos_id:
                break
            n += 1
        counts.append(n)
    return counts


@torch.inference_mode()
def _generate_batch(
    loaded: LoadedModel,
    prompts: Sequence[str],
    settings: DecodingSettings,
    max_prompt_tokens: int | None,
    should_stop: Callable[[], bool] | None = None,
) -> list[Generation]:
    tokenizer = loaded.tokenizer
    encoded = tokenizer(
        list(prompts),
        return_tensors="pt",
        padding=True,
        truncation=max_prompt_tokens is not None,
        max_length=max_prompt_tokens,
    ).to(loaded.device)  # the tokenizer's own special tokens: Llama's BOS, T5's EOS, none for GPT-2/Qwen
    lengths = encoded["attention_mask"].sum(dim=1).tolist()
    started = time.perf_counter()
    output = loaded.model.generate(
        **encoded,
        generation_config=_generation_config(loaded, settings),
        tokenizer=tokenizer,
        stopping_criteria=StoppingCriteriaList([_StopWhen(should_stop)]) if should_stop else None,
    )
    seconds = time.perf_counter() - started
    if should_stop is not None and should_stop():
        raise GenerationStopped("generation stopped on request")
    new = output if loaded.is_seq2seq else output[:, encoded["input_ids"].shape[1] :]
    if loaded.is_seq2seq:
        new = new[:, 1:]  # drop the decoder start token
    texts = tokenizer.batch_decode(new, skip_special_tokens=True)
    counts = _count_new_tokens(new, tokenizer.pad_token_id, tokenizer.eos_token_id)
    k = settings.num_samples
    share = seconds / len(prompts)
    results = []
    for i in range(len(prompts)):
        rows = range(i * k, (i + 1) * k)
        results.append(
            Generation(
                texts=[truncate_at_stop(texts[r], settings.stop) for r in rows],
                new_tokens=[counts[r] for r in rows],
                seconds=share,
                prompt_tokens=int(lengths[i]),
            )
        )
    return results


def generate_texts(
    loaded: LoadedModel,
    prompts: Sequence[str],
    settings: DecodingSettings,
    *,
    on_batch: Callable[[list[int], list[Generation]], None] | None = None,
    skip: set[int] | None = None,
    progress: bool = True,
    description: str = "generating",
    should_stop: Callable[[], bool] | None = None,
) -> list[Generation | None]:
    """Generate for every prompt, batched by length; results in the order of `prompts`.

    `on_batch(indices, generations)` is called after each batch so callers can persist as they go;
    indices in `skip` are not generated (their slots stay None), which is how a resumed run continues.
    `should_stop()` is called before each batch and at every decoding step; once it returns True the
    call raises `GenerationStopped` (batches already passed to `on_batch` stay done).
    """
    from scalingdown.progress import Progress

    tokenizer = loaded.tokenizer
    limit = context_limit(loaded)
    max_prompt_tokens = None
    if limit is not None and not loaded.is_seq2seq:
        max_prompt_tokens = max(1, limit - settings.max_new_tokens)
        tokenizer.truncation_side = "left"  # keep the question, drop the oldest exemplars
    todo = [i for i in range(len(prompts)) if not skip or i not in skip]
    token_lengths = {i: len(tokenizer(prompts[i], verbose=False)["input_ids"]) for i in todo}
    # Longest first: the slowest batch runs while the progress bar's estimate is still honest.
    todo.sort(key=lambda i: -token_lengths[i])
    results: list[Generation | None] = [None] * len(prompts)
    with Progress(len(todo), description, unit="prompts", enabled=progress) as bar:
        for start in range(0, len(todo), settings.batch_size):
            indices = todo[start : start + settings.batch_size]
            if should_stop is not None and should_stop():
                raise GenerationStopped("generation stopped on request")
            if settings.temperature > 0:
                torch.manual_seed(settings.seed + start)
            batch = _generate_batch(
                loaded, [prompts[i] for i in indices], settings, max_prompt_tokens, should_stop
            )
            for i, generation in zip(indices, batch, strict=False):
                generation.truncated = max_prompt_tokens is not None and token_lengths[i] > max_prompt_tokens
                results[i] = generation
            if on_batch is not None:
                on_batch(indices, batch)
            bar.update(len(indices))
    return results

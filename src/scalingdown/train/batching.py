"""From training examples to padded batches: tokenisation with prompt masking, length grouping, collation.

Tokenisation. The prompt is tokenised exactly as evaluation tokenises it (the tokenizer's own special
tokens: Llama's BOS, T5's closing EOS, none for GPT-2 or Qwen), the target on its own without special
tokens, and the ids are concatenated, so the prompt/target boundary is exact and the model learns to
continue the very token sequence it is given at evaluation. Causal models read `prompt + target + eos`
and learn only `target + eos` (labels -100 over the prompt); seq2seq models read the prompt in the
encoder and learn `target + eos` in the decoder. A too-long example loses prompt tokens from the left
first (the question's start, keeping the special tokens), the target's end only when the target alone
does not fit: the target is never dropped whole, so every example still teaches something.

Batching. `length_grouped_batches` is Hugging Face's LengthGroupedSampler: a seeded shuffle, then
mega-batches of `mega_batch_mult * batch_size` indices, each sorted by length (longest first) and cut
into batches. Batches hold examples of similar length, so little compute goes into padding, while the
order stays random at the scale of mega-batches. The batch with the longest example comes first, so
a batch that does not fit in memory fails at the first step, not hours in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from scalingdown.errors import UserError
from scalingdown.train.examples import TrainExample
from scalingdown.train.objective import IGNORE_INDEX


def _split_specials(ids: list[int], special: set[int]) -> tuple[list[int], list[int], list[int]]:
    """(leading special tokens, text tokens, trailing special tokens) of one encoded prompt."""
    start, end = 0, len(ids)
    while start < end and ids[start] in special:
        start += 1
    while end > start and ids[end - 1] in special:
        end -= 1
    return ids[:start], ids[start:end], ids[end:]


def _cut_prompt(prompt: list[int], room: int, special: set[int]) -> list[int]:
    """The prompt in at most `room` tokens: text tokens dropped from the left, specials kept."""
    if len(prompt) <= room:
        return prompt
    head, body, tail = _split_specials(prompt, special)
    keep = max(0, room - len(head) - len(tail))
    return head + body[len(body) - keep :] + tail


def tokenize_examples(
    examples: Sequence[TrainExample],
    tokenizer: PreTrainedTokenizerBase,
    *,
    max_length: int,
    is_seq2seq: bool,
    task_index: Mapping[str, int],
) -> list[dict]:
    """One feature dict per example: {"input_ids": list[int], "labels": list[int], "task": int,
    "length": int, "truncated": bool}; see the module docstring for the layout.

    `length` is what batching sorts by: the sequence length (causal) or encoder plus decoder tokens
    (seq2seq). Causal sequences and both seq2seq sides are at most `max_length` tokens.
    """
    eos = tokenizer.eos_token_id
    if eos is None:
        raise UserError("the student's tokenizer has no eos token, so a target's end cannot be learnt")
    missing = sorted({e.task for e in examples} - set(task_index))
    if missing:
        raise ValueError(f"tasks without an index: {', '.join(missing)}")
    special = set(tokenizer.all_special_ids)
    prompts = tokenizer([e.prompt for e in examples], verbose=False)["input_ids"] if examples else []
    targets = (
        tokenizer([e.target for e in examples], add_special_tokens=False, verbose=False)["input_ids"]
        if examples
        else []
    )
    features = []
    for example, prompt, target in zip(examples, prompts, targets, strict=True):
        target = list(target) + [eos]
        before = len(prompt) + len(target)
        if is_seq2seq:
            prompt = _cut_prompt(list(prompt), max_length, special)
            target = target[:max_length]
            input_ids, labels = prompt, target
        else:
            prompt = _cut_prompt(list(prompt), max_length - len(target), special)
            target = target[: max_length - len(prompt)]
            input_ids = prompt + target
            labels = [IGNORE_INDEX] * len(prompt) + target
        if not target:
            raise UserError(
                f"hyperparameters.max_length: {max_length} tokens leave no room for a target after the "
                f"prompt's special tokens (example {example.problem_id}, {example.task})"
            )
        length = len(input_ids) + len(labels) if is_seq2seq else len(input_ids)
        features.append(
            {
                "input_ids": input_ids,
                "labels": labels,
                "task": task_index[example.task],
                "length": length,
                "truncated": len(prompt) + len(target) < before,
            }
        )
    return features


def _generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed + epoch)


def random_batches(n: int, batch_size: int, *, seed: int, epoch: int) -> list[list[int]]:
    """Indices 0..n-1 in a seeded shuffle (seed + epoch), cut into batches; the last may be short."""
    order = torch.randperm(n, generator=_generator(seed, epoch)).tolist()
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def length_grouped_batches(
    lengths: Sequence[int], batch_size: int, *, seed: int, epoch: int, mega_batch_mult: int = 50
) -> list[list[int]]:
    """Batches of indices of similar length (see the module docstring). Every index appears exactly
    once; the result depends only on (lengths, batch_size, seed, epoch, mega_batch_mult)."""
    if batch_size < 1 or mega_batch_mult < 1:
        raise ValueError("batch_size and mega_batch_mult must be at least 1")
    order = torch.randperm(len(lengths), generator=_generator(seed, epoch)).tolist()
    mega = mega_batch_mult * batch_size
    batches: list[list[int]] = []
    for start in range(0, len(order), mega):
        # sorted() is stable: equal lengths keep their shuffled order, so the result is deterministic.
        group = sorted(order[start : start + mega], key=lambda i: lengths[i], reverse=True)
        batches.extend(group[i : i + batch_size] for i in range(0, len(group), batch_size))
    if batches:
        longest = max(range(len(batches)), key=lambda b: lengths[batches[b][0]])
        batches[0], batches[longest] = batches[longest], batches[0]
    return batches


def padding_share(batches: Sequence[Sequence[int]], lengths: Sequence[int]) -> float:
    """Share of the padded token positions that are padding: 1 - real tokens / (sum of B * longest)."""
    real = sum(lengths[i] for batch in batches for i in batch)
    padded = sum(len(batch) * max(lengths[i] for i in batch) for batch in batches if batch)
    return 1 - real / padded if padded else 0.0


def _pad(rows: Sequence[Sequence[int]], value: int, multiple: int | None) -> Tensor:
    width = max(len(row) for row in rows)
    if multiple:
        width = -(-width // multiple) * multiple
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return out


def collate(
    features: Sequence[dict], *, pad_id: int, is_seq2seq: bool, pad_to_multiple_of: int | None = None
) -> dict[str, Tensor]:
    """Right-padded batch tensors of B features:
    input_ids (B, L) padded with `pad_id`, attention_mask (B, L) 1 on real tokens, labels -100 where
    padded - (B, L) for causal models, (B, Lt) for seq2seq (the decoder side) - and task (B,).
    `pad_to_multiple_of` rounds L (and Lt) up, e.g. to 8 for tensor cores."""
    if not features:
        raise ValueError("cannot collate an empty batch")
    inputs = [f["input_ids"] for f in features]
    input_ids = _pad(inputs, pad_id, pad_to_multiple_of)
    attention_mask = _pad([[1] * len(row) for row in inputs], 0, pad_to_multiple_of)
    labels = _pad([f["labels"] for f in features], IGNORE_INDEX, pad_to_multiple_of)
    if not is_seq2seq and labels.shape != input_ids.shape:
        raise ValueError("causal features need labels as long as their input_ids")
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "labels": labels,
        "task": torch.tensor([f["task"] for f in features], dtype=torch.long),
    }

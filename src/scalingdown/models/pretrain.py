"""Pretraining a tiny model on plain texts: a short, readable AdamW loop.

This is what turns a freshly initialised tiny model into one that writes GSM8K-like solutions, so
the demo and the benchmarks have a model whose outputs look like the real thing. It is not the
student trainer (that lives in `scalingdown.train`); it only does next-token prediction.

Causal models learn every token of `text + eos`. Seq2seq (T5) models need a source and a target:
each text is split after its first "\\nAnswer:", the source being everything up to and including
"\\nAnswer:" and the target the rest plus eos. That is exactly the shape of evaluation, where the
encoder reads the "Question: ...\\nAnswer:" prompt and the decoder writes the solution. A text with
no "\\nAnswer:" is split at the whitespace nearest its middle.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from scalingdown.progress import Progress

ANSWER_MARKER = "\nAnswer:"
IGNORE_INDEX = -100  # label value that the Hugging Face losses skip


def split_source_target(text: str) -> tuple[str, str]:
    """Split a text into (source, target) for a seq2seq model; see the module docstring."""
    cut = text.find(ANSWER_MARKER)
    if cut >= 0:
        cut += len(ANSWER_MARKER)
        return text[:cut], text[cut:]
    middle = len(text) // 2
    spaces = [i for i, ch in enumerate(text) if ch.isspace()]
    cut = min(spaces, key=lambda i: abs(i - middle)) if spaces else middle
    return text[:cut], text[cut:]


def pad_batch(sequences: Sequence[list[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """Right-pad token lists into `ids` [batch, max_len] and `attention_mask` [batch, max_len]."""
    width = max(len(seq) for seq in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return ids, mask


def _encode(tokenizer: PreTrainedTokenizerBase, text: str, max_length: int) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"][:max_length]


def _index_stream(n: int, seed: int) -> Iterator[int]:
    """Indices 0..n-1 in a fresh seeded shuffle each epoch, forever."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        yield from torch.randperm(n, generator=generator).tolist()


def warmup_cosine(step: int, *, total: int, warmup: int, floor: float = 0.1) -> float:
    """Learning-rate multiplier: linear warmup to 1, then cosine decay to `floor`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def pretrain_causal_lm(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    *,
    steps: int,
    batch_size: int = 16,
    lr: float = 3e-3,
    seed: int = 0,
    max_length: int = 256,
    progress: bool = True,
) -> list[float]:
    """Train `model` in place on `texts` for `steps` AdamW steps; returns the loss of each step.

    Each step takes `batch_size` texts (reshuffled each epoch with `seed`), tokenizes them as
    `text + eos` truncated to `max_length` tokens, right-pads them and sets the labels of padded
    positions to -100 so they add nothing to the loss. Seq2seq models get (source, target) pairs,
    see `split_source_target`. The learning rate warms up over the first tenth of the steps and
    then follows a cosine down to a tenth of `lr`. The model is left in eval mode on its device.
    Deterministic for a seed on CPU.
    """
    if steps <= 0 or not texts:
        return []
    device = next(model.parameters()).device
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    if pad is None:
        pad = eos
    seq2seq = bool(model.config.is_encoder_decoder)
    if seq2seq:
        pairs = [split_source_target(text) for text in texts]
        sources = [_encode(tokenizer, src, max_length) for src, _ in pairs]
        targets = [_encode(tokenizer, tgt, max_length - 1) + [eos] for _, tgt in pairs]
    else:
        sources = [(_encode(tokenizer, text, max_length - 1) + [eos]) for text in texts]
        targets = []

    warmup = max(1, steps // 10)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, total=steps, warmup=warmup)
    )
    order = _index_stream(len(texts), seed)
    losses: list[float] = []
    model.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # anything stochastic inside the model (dropout) follows the seed
        bar = Progress(steps, "pretrain", unit="steps", enabled=progress)
        for _ in range(steps):
            batch = [next(order) for _ in range(batch_size)]
            ids, mask = pad_batch([sources[i] for i in batch], pad)
            inputs = {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
            if seq2seq:
                labels, label_mask = pad_batch([targets[i] for i in batch], pad)
            else:
                labels, label_mask = ids.clone(), mask
            # labels [batch, len]: -100 where padded; causal models shift them inside forward().
            labels[label_mask == 0] = IGNORE_INDEX
            loss = model(**inputs, labels=labels.to(device)).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
        bar.close()
    model.eval()
    return losses

"""The TinyLLM multi-teacher objective, and the optional white-box KL term.

TinyLLM's dataset loss, for an answer task and one rationale task per teacher i, is

    L = gamma * L_answer + sum_i alpha_i * L_rationale_i,

each L_task the mean, over that task's examples, of the example's loss (the mean cross-entropy of its
target tokens; prompt tokens carry the label -100 and count for nothing).

How a batch estimates it. Tasks have different sizes (one answer example per problem, as many
rationale examples as a teacher has kept rationales), so the per-task means cannot be taken inside a
batch: a batch of 8 may hold no example of some task, and "mean per task in the batch" would then be a
biased, noisy estimate whose scale changes with the batch's mix. Instead each example gets one fixed
weight, computed once from the whole data set (N examples, n_k of task k, task weight w_k):

    weight_i = w_k(i) * N / n_k(i)                       (`example_weight`)

    L = sum_k w_k * (1/n_k) sum_{i in k} loss_i = (1/N) sum_i weight_i * loss_i.

So L is the plain mean of `weight_i * loss_i` over the data set, and the batch loss

    multitask_loss = (1/B) sum_{i in batch} weight_i * loss_i

is an unbiased estimate of L for a uniformly drawn batch; the mean of it over the equal-size batches
of one epoch is L exactly (whatever the order or the grouping by length). It is also LINEAR in the
examples: the loss of two concatenated half-batches is the mean of their two losses. That is what
makes distributed training and gradient accumulation exact: DDP averages the gradients of equal-size
per-rank batches, and accumulation sums micro-batch gradients divided by their number; both then give
the gradient of the one big batch. (A per-batch token mean, or per-task means inside a batch, would not
be linear, and each rank/micro-batch would weigh its examples differently.) A short last batch is the
only exception; its examples weigh B / len(batch) times more than in a full one.

`example_losses` takes full logits (B, T, V); the training loop computes the same values without
them, over target positions only and a chunk at a time (`train.chunked_loss`, checked against this).

`kl_divergence` is the white-box term: the student's next-token distribution pulled towards a local
teacher's that shares its tokenizer (forward KL(teacher || student), or Jensen-Shannon).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE_INDEX = -100  # label of a token that is not learned (prompt, padding); the HF convention

ANSWER_TASK = "answer"
SINGLE_TASK = "single"
RATIONALE_PREFIX = "rationale:"


def rationale_task(teacher: str) -> str:
    """The task name of a teacher's rationale task, e.g. 'rationale:gpt4o'."""
    return f"{RATIONALE_PREFIX}{teacher}"


def task_weights(
    fmt: Literal["multitask", "single"],
    teachers: Sequence[str],
    *,
    answer_weight: float = 1.0,
    rationale_weights: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """Weight of each task: gamma for 'answer', alpha_i (default 1.0) for 'rationale:<teacher>';
    the single format has one task, 'single', of weight 1. Keys are in the order the tasks are
    numbered (`task_index`)."""
    if fmt == "single":
        return {SINGLE_TASK: 1.0}
    alphas = dict(rationale_weights or {})
    weights = {ANSWER_TASK: float(answer_weight)}
    for teacher in teachers:
        weights[rationale_task(teacher)] = float(alphas.get(teacher, 1.0))
    return weights


def task_index(weights: Mapping[str, float]) -> dict[str, int]:
    """Task name -> integer id (the `task` column of a batch), in the order of `weights`."""
    return {name: i for i, name in enumerate(weights)}


def example_weight(
    task: str, task_weights: Mapping[str, float], task_counts: Mapping[str, int], total: int
) -> float:
    """w_task * total / count_task: the fixed per-example weight that makes `multitask_loss` an
    unbiased, linear estimate of the dataset loss (see the module docstring)."""
    if task not in task_weights:
        raise ValueError(f"task {task!r} has no weight (known: {', '.join(task_weights)})")
    count = task_counts.get(task, 0)
    if count <= 0:
        raise ValueError(f"task {task!r} has no examples, so it has no per-example weight")
    return task_weights[task] * total / count


def token_losses(logits: Tensor, labels: Tensor, *, shift: bool) -> Tensor:
    """Per-token cross-entropy.

    logits (B, T, V), labels (B, T) with -100 where nothing is learned. With `shift` (causal LMs)
    position t predicts label t+1: the result is (B, T-1), `logits[:, :-1]` against `labels[:, 1:]`.
    Without (seq2seq decoders, whose logits are already aligned with their labels) it is (B, T).
    Ignored positions are 0. Computed in float32, as Hugging Face's own loss does, so bf16 logits
    do not lose the small probabilities.
    """
    if shift:
        logits, labels = logits[:, :-1], labels[:, 1:]
    batch, length, vocab = logits.shape
    losses = F.cross_entropy(
        logits.reshape(-1, vocab).float(),
        labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    )
    return losses.view(batch, length)


def example_losses(logits: Tensor, labels: Tensor, *, shift: bool) -> Tensor:
    """Each example's mean cross-entropy over its target tokens: (B,). logits (B, T, V), labels (B, T).
    An example with no target token (all -100) has loss 0 and gives no gradient."""
    per_token = token_losses(logits, labels, shift=shift)
    targets = labels[:, 1:] if shift else labels
    counts = (targets != IGNORE_INDEX).sum(dim=1)
    return per_token.sum(dim=1) / counts.clamp(min=1)


def multitask_loss(example_loss: Tensor, weights: Tensor) -> Tensor:
    """sum_i weights_i * loss_i / B: scalar. example_loss (B,), weights (B,) from `example_weight`."""
    if example_loss.shape != weights.shape or example_loss.dim() != 1:
        raise ValueError(
            f"expected two (B,) tensors, got {tuple(example_loss.shape)} and {tuple(weights.shape)}"
        )
    return (weights.to(example_loss.dtype) * example_loss).sum() / example_loss.numel()


def per_task_means(example_loss: Tensor, task_ids: Tensor, num_tasks: int) -> tuple[Tensor, Tensor]:
    """Per-task loss sums (K,) and example counts (K,) of a batch, detached, for the training log.

    Sums and counts rather than means, so the log can add them up over steps and processes before
    dividing. example_loss (B,), task_ids (B,) integers in [0, num_tasks).
    """
    loss = example_loss.detach().float()
    ids = task_ids.to(loss.device).long()
    sums = torch.zeros(num_tasks, dtype=torch.float32, device=loss.device).index_add_(0, ids, loss)
    counts = torch.zeros(num_tasks, dtype=torch.long, device=loss.device).index_add_(
        0, ids, torch.ones_like(ids)
    )
    return sums, counts


def kl_divergence(
    student_logits: Tensor,
    teacher_logits: Tensor,
    mask: Tensor,
    *,
    kind: Literal["forward_kl", "jsd"] = "forward_kl",
    temperature: float = 1.0,
) -> Tensor:
    """Divergence between teacher and student next-token distributions, averaged over masked-in tokens.

    student_logits (B, T, Vs), teacher_logits (B, T, Vt) at the same positions (for causal models the
    caller passes `logits[:, :-1]` of both and `mask = labels[:, 1:] != -100`), mask (B, T) bool/0-1.
    Returns a scalar:
      forward_kl: mean over tokens of KL(p_teacher || p_student) = sum_v p_t (log p_t - log p_s);
      jsd:        mean of 0.5 KL(p_t || m) + 0.5 KL(p_s || m), m = (p_t + p_s) / 2 (at most log 2).
    Both distributions are softmax(logits / temperature); no temperature**2 factor is applied (the
    term's weight in the config absorbs any scale). The teacher is detached: gradients flow only into
    the student. Models of one family may pad their output layers to different sizes (Qwen2.5-0.5B has
    151,936 rows, Qwen2.5-7B 152,064, over one tokenizer); both are cut to the shared first
    min(Vs, Vt) ids, which hold every real token. No masked-in token -> 0 (still part of the graph).
    """
    if kind not in ("forward_kl", "jsd"):
        raise ValueError(f"unknown divergence {kind!r} (expected 'forward_kl' or 'jsd')")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    vocab = min(student_logits.shape[-1], teacher_logits.shape[-1])
    log_q = F.log_softmax(student_logits[..., :vocab].float() / temperature, dim=-1)
    log_p = F.log_softmax(teacher_logits[..., :vocab].detach().float() / temperature, dim=-1)
    if kind == "forward_kl":
        per_token = (log_p.exp() * (log_p - log_q)).sum(dim=-1)
    else:
        log_m = torch.logaddexp(log_p, log_q) - math.log(2.0)
        per_token = 0.5 * (log_p.exp() * (log_p - log_m)).sum(dim=-1) + 0.5 * (
            log_q.exp() * (log_q - log_m)
        ).sum(dim=-1)
    weights = mask.to(per_token.dtype)
    return (per_token * weights).sum() / weights.sum().clamp(min=1)

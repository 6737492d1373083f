"""The multi-teacher objective and the KL term against plain, slow references on seeded tensors."""

from __future__ import annotations

import math
import random

import pytest
import torch
import torch.nn.functional as F

from scalingdown.train.objective import (
    IGNORE_INDEX,
    example_losses,
    example_weight,
    kl_divergence,
    multitask_loss,
    per_task_means,
    task_index,
    task_weights,
    token_losses,
)


def seeded_batch(seed: int = 0, batch: int = 4, length: int = 7, vocab: int = 11):
    """Random logits and labels with -100 prompt/padding positions and one example with no target."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, length, vocab, generator=g)
    labels = torch.randint(0, vocab, (batch, length), generator=g)
    labels[0, :3] = IGNORE_INDEX  # a prompt
    labels[1, 5:] = IGNORE_INDEX  # right padding
    labels[2, 1:4] = IGNORE_INDEX
    labels[3, :] = IGNORE_INDEX  # no target token at all
    return logits, labels


def reference_token_losses(logits, labels, shift):
    """Loops and log-softmax by hand: -log p(label) at each kept position, 0 elsewhere."""
    batch, length, _ = logits.shape
    offset = 1 if shift else 0
    out = torch.zeros(batch, length - offset)
    for b in range(batch):
        for t in range(length - offset):
            label = int(labels[b, t + offset])
            if label == IGNORE_INDEX:
                continue
            row = logits[b, t].tolist()
            log_z = math.log(sum(math.exp(x) for x in row))
            out[b, t] = log_z - row[label]
    return out


@pytest.mark.parametrize("shift", [True, False])
def test_token_losses_match_a_loop_reference(shift):
    logits, labels = seeded_batch()
    got = token_losses(logits, labels, shift=shift)
    assert got.shape == (4, 6 if shift else 7)
    torch.testing.assert_close(got, reference_token_losses(logits, labels, shift), rtol=1e-5, atol=1e-5)
    assert torch.all(got[3] == 0)


@pytest.mark.parametrize("shift", [True, False])
def test_example_losses_match_cross_entropy_one_example_at_a_time(shift):
    logits, labels = seeded_batch(seed=1)
    got = example_losses(logits, labels, shift=shift)
    assert got.shape == (4,)
    for b in range(4):
        lg, lb = (logits[b, :-1], labels[b, 1:]) if shift else (logits[b], labels[b])
        keep = lb != IGNORE_INDEX
        expected = F.cross_entropy(lg[keep], lb[keep]) if keep.any() else torch.tensor(0.0)
        torch.testing.assert_close(got[b], expected, rtol=1e-5, atol=1e-6)
    assert got[3] == 0


def test_example_without_targets_gives_no_gradient():
    logits, labels = seeded_batch(seed=2)
    logits.requires_grad_(True)
    example_losses(logits, labels, shift=True).sum().backward()
    assert torch.all(logits.grad[3] == 0)
    assert logits.grad[0].abs().sum() > 0
    assert torch.all(logits.grad[0, :2] == 0)  # positions that predict prompt labels learn nothing


def test_bf16_logits_are_scored_in_float32():
    logits, labels = seeded_batch(seed=3)
    got = token_losses(logits.bfloat16(), labels, shift=True)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, token_losses(logits.bfloat16().float(), labels, shift=True))


def test_task_weights_and_index_follow_the_config():
    weights = task_weights("multitask", ["big", "small"], answer_weight=0.5, rationale_weights={"small": 2.0})
    assert weights == {"answer": 0.5, "rationale:big": 1.0, "rationale:small": 2.0}
    assert task_index(weights) == {"answer": 0, "rationale:big": 1, "rationale:small": 2}
    assert task_weights("single", ["big"]) == {"single": 1.0}


def test_example_weight_refuses_unknown_or_empty_tasks():
    with pytest.raises(ValueError, match="no weight"):
        example_weight("rationale:x", {"answer": 1.0}, {"answer": 3}, 3)
    with pytest.raises(ValueError, match="no examples"):
        example_weight("answer", {"answer": 1.0}, {}, 3)


def make_dataset(seed: int = 0):
    """24 examples of three tasks of unequal size, each with a fixed loss."""
    rng = random.Random(seed)
    tasks = ["answer"] * 8 + ["rationale:a"] * 11 + ["rationale:b"] * 5
    rng.shuffle(tasks)
    losses = torch.tensor([rng.uniform(0.1, 5.0) for _ in tasks], dtype=torch.float64)
    return tasks, losses


def test_batches_average_to_the_tinyllm_dataset_loss_for_any_split():
    tasks, losses = make_dataset()
    gamma, alphas = 0.7, {"a": 1.3, "b": 0.4}
    weights_by_task = task_weights("multitask", ["a", "b"], answer_weight=gamma, rationale_weights=alphas)
    counts = {t: tasks.count(t) for t in weights_by_task}
    weights = torch.tensor(
        [example_weight(t, weights_by_task, counts, len(tasks)) for t in tasks], dtype=torch.float64
    )

    def mean_of(task):
        return sum(float(x) for x, t in zip(losses, tasks, strict=True) if t == task) / tasks.count(task)

    expected = (
        gamma * mean_of("answer")
        + alphas["a"] * mean_of("rationale:a")
        + alphas["b"] * mean_of("rationale:b")
    )
    for seed, batch_size in [(0, 4), (1, 6), (2, 8), (3, 24)]:
        order = torch.randperm(len(tasks), generator=torch.Generator().manual_seed(seed))
        batches = order.split(batch_size)
        got = sum(multitask_loss(losses[b], weights[b]) for b in batches) / len(batches)
        assert float(got) == pytest.approx(expected, rel=1e-12)
    # A per-batch mean of raw losses would not be the TinyLLM loss (the test would catch a plain mean).
    assert float(losses.mean()) != pytest.approx(expected, rel=1e-3)


def test_the_loss_and_its_gradient_are_linear_in_examples():
    logits, labels = seeded_batch(seed=4, batch=6)
    labels[3] = labels[2]  # seeded_batch leaves row 3 empty; give every row targets here
    weights = torch.tensor([0.5, 2.0, 1.0, 3.0, 0.25, 1.5])
    whole = logits.clone().requires_grad_(True)
    loss = multitask_loss(example_losses(whole, labels, shift=True), weights)
    loss.backward()
    halves = logits.clone().requires_grad_(True)
    first = multitask_loss(example_losses(halves[:3], labels[:3], shift=True), weights[:3])
    second = multitask_loss(example_losses(halves[3:], labels[3:], shift=True), weights[3:])
    # Gradient accumulation / DDP: each half's loss divided by the number of halves, gradients summed.
    ((first + second) / 2).backward()
    torch.testing.assert_close(loss, (first + second) / 2)
    torch.testing.assert_close(whole.grad, halves.grad)


def test_per_task_sums_and_counts():
    losses = torch.tensor([1.0, 2.0, 4.0, 8.0, 16.0], requires_grad=True)
    ids = torch.tensor([2, 0, 2, 2, 0])
    sums, counts = per_task_means(losses, ids, 4)
    expected_sums = [0.0] * 4
    expected_counts = [0] * 4
    for loss, task in zip(losses.tolist(), ids.tolist(), strict=True):
        expected_sums[task] += loss
        expected_counts[task] += 1
    assert sums.tolist() == expected_sums
    assert counts.tolist() == expected_counts
    assert not sums.requires_grad


def reference_divergence(student, teacher, mask, kind, temperature):
    """Explicit sums p * log(p / q) over the vocabulary, token by token."""
    total, n = 0.0, 0
    batch, length, _ = student.shape
    for b in range(batch):
        for t in range(length):
            if not mask[b, t]:
                continue
            q = torch.softmax(student[b, t].double() / temperature, -1).tolist()
            p = torch.softmax(teacher[b, t].double() / temperature, -1).tolist()
            if kind == "forward_kl":
                value = sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))
            else:
                m = [(pi + qi) / 2 for pi, qi in zip(p, q, strict=True)]
                value = 0.5 * sum(pi * math.log(pi / mi) for pi, mi in zip(p, m, strict=True)) + 0.5 * sum(
                    qi * math.log(qi / mi) for qi, mi in zip(q, m, strict=True)
                )
            total += value
            n += 1
    return total / n if n else 0.0


@pytest.mark.parametrize("kind", ["forward_kl", "jsd"])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_divergences_match_their_definitions(kind, temperature):
    g = torch.Generator().manual_seed(5)
    student = torch.randn(3, 5, 9, generator=g) * 2
    teacher = torch.randn(3, 5, 9, generator=g) * 2
    mask = torch.rand(3, 5, generator=g) > 0.4
    mask[1] = False
    got = kl_divergence(student, teacher, mask, kind=kind, temperature=temperature)
    expected = reference_divergence(student, teacher, mask, kind, temperature)
    assert float(got) == pytest.approx(expected, rel=1e-5)
    if kind == "jsd":
        assert 0 < float(got) <= math.log(2)


def test_divergence_of_equal_distributions_is_zero_and_no_tokens_give_zero():
    logits = torch.randn(2, 4, 6, generator=torch.Generator().manual_seed(6))
    mask = torch.ones(2, 4, dtype=torch.bool)
    for kind in ("forward_kl", "jsd"):
        assert float(kl_divergence(logits, logits + 3.0, mask, kind=kind)) == pytest.approx(0, abs=1e-6)
    student = logits.clone().requires_grad_(True)
    empty = kl_divergence(student, logits.flip(0), torch.zeros(2, 4), kind="forward_kl")
    assert float(empty.detach()) == 0
    empty.backward()  # still part of the graph, so a loop can always add it
    assert torch.all(student.grad == 0)


@pytest.mark.parametrize("kind", ["forward_kl", "jsd"])
def test_gradients_flow_only_into_the_student_and_only_at_masked_in_tokens(kind):
    g = torch.Generator().manual_seed(7)
    student = torch.randn(2, 4, 6, generator=g).requires_grad_(True)
    teacher = torch.randn(2, 4, 6, generator=g).requires_grad_(True)
    mask = torch.tensor([[1, 1, 0, 0], [0, 1, 1, 1]])
    kl_divergence(student, teacher, mask, kind=kind).backward()
    assert teacher.grad is None
    assert torch.all(student.grad[mask == 0] == 0)
    assert torch.all(student.grad[mask == 1].abs().sum(-1) > 0)


def test_vocabularies_padded_to_different_sizes_are_compared_on_the_shared_ids():
    g = torch.Generator().manual_seed(8)
    student = torch.randn(1, 3, 8, generator=g)
    teacher = torch.randn(1, 3, 10, generator=g)
    mask = torch.ones(1, 3)
    got = kl_divergence(student, teacher, mask, kind="forward_kl")
    expected = reference_divergence(student, teacher[..., :8], mask, "forward_kl", 1.0)
    assert float(got) == pytest.approx(expected, rel=1e-5)


def test_unknown_divergence_is_refused():
    x = torch.zeros(1, 1, 2)
    with pytest.raises(ValueError, match="unknown divergence"):
        kl_divergence(x, x, torch.ones(1, 1), kind="reverse_kl")

"""The white-box KL term: a local teacher's next-token distributions on the rationale it wrote.

TinyLLM learns teachers' rationales as text. A local `hf` teacher that shares the student's tokenizer
gives more: its full distribution over each rationale token. The teacher is scored in the context
it wrote the rationale in - its own prompt (in-context examples, question, gold answer), stored by
the teach stage in `rationales.jsonl` - never on the student's prompt ("Explain like T would..."),
a context it never saw. Both models read the same target token ids, so the term compares them token
by token:

    student:  [student prompt ids] t_1 .. t_m eos      (the training feature; labels on t_1..eos)
    teacher:  [teacher prompt ids] t_1 .. t_m eos      (built here; the same ids after the prompt)

and the KL runs over the m + 1 positions that predict t_1 .. eos in each sequence. A teacher prompt
too long for `max_length` loses tokens from the left (its in-context examples first), never
target tokens, so the two sides always hold the same number of positions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from scalingdown.errors import UserError
from scalingdown.train.objective import IGNORE_INDEX, kl_divergence

TEACHER_KEYS = ("teacher_input_ids", "teacher_attention_mask", "teacher_labels")


@dataclass
class WhiteBox:
    """A local teacher model for the KL term, and the task index of its rationale examples."""

    task: int
    model: torch.nn.Module


def teacher_ids(prompt_ids: Sequence[int], target: Sequence[int], max_length: int) -> list[int]:
    """The teacher's sequence: its prompt (cut from the left to fit) followed by `target`."""
    room = max(1, max_length - len(target))  # at least one prompt token predicts the first target token
    return list(prompt_ids[-room:]) + list(target)


def add_teacher_inputs(
    features: list[dict],
    teacher_prompts: Sequence[str | None],
    tokenizer,
    tasks: set[int],
    *,
    max_length: int,
) -> None:
    """Give each feature of a white-box task (`tasks`) the teacher's sequence, in place:
    "teacher_input_ids" and "teacher_target_start" (where the shared target begins).

    `teacher_prompts[i]` is the rendered text the teacher was prompted with for feature i (None for
    features of other tasks). The target is the feature's own learnt ids (its labels that are not
    -100), so both sides read identical tokens.
    """
    chosen = [i for i, f in enumerate(features) if f["task"] in tasks]
    missing = [i for i in chosen if teacher_prompts[i] is None]
    if missing:
        raise UserError(
            "kl_weight: a white-box teacher's rationales carry no prompt (written by an older version "
            "of scalingdown); run `scalingdown teach` again"
        )
    if not chosen:
        return
    encoded = tokenizer([teacher_prompts[i] for i in chosen], verbose=False)["input_ids"]
    for i, prompt_ids in zip(chosen, encoded, strict=True):
        target = [t for t in features[i]["labels"] if t != IGNORE_INDEX]  # the learnt ids, in order
        ids = teacher_ids(prompt_ids, target, max_length)
        features[i]["teacher_input_ids"] = ids
        features[i]["teacher_target_start"] = len(ids) - len(target)


def collate_teacher(features: Sequence[dict], pad_id: int) -> dict[str, Tensor]:
    """Right-padded teacher tensors for the features that have a teacher sequence (others get one
    pad token, never read): teacher_input_ids, teacher_attention_mask, teacher_labels (B, Lt)."""
    if not any("teacher_input_ids" in f for f in features):
        return {}
    rows = [f.get("teacher_input_ids", [pad_id]) for f in features]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    for i, (feature, row) in enumerate(zip(features, rows, strict=True)):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
        if "teacher_input_ids" in feature:
            start = feature["teacher_target_start"]
            labels[i, start : len(row)] = ids[i, start : len(row)]
    return {"teacher_input_ids": ids, "teacher_attention_mask": mask, "teacher_labels": labels}


def _target_logits(logits: Tensor, labels: Tensor, *, shift: bool) -> Tensor:
    """(N, V): the logits that predict each learnt token, row by row, in position order."""
    if shift:  # causal: position t predicts token t + 1
        logits, labels = logits[:, :-1], labels[:, 1:]
    return logits[labels != IGNORE_INDEX]


def white_box_term(
    student_logits: Tensor | Callable[[Tensor], Tensor],
    batch: dict[str, Tensor],
    white_box: Sequence[WhiteBox],
    kind: str,
    is_seq2seq: bool,
) -> Tensor:
    """KL between each white-box teacher (on its own prompt) and the student, on that teacher's
    rationale rows, scaled by the rows' share of the batch so the term stays linear in examples.

    student_logits: the student's logits (B, L, V), or a function from a (B,) bool row mask to those
    rows' logits at their target positions, (n, V) in position order: what `chunked_loss.StudentLoss`
    gives, which never holds every row's logits. batch as `collate` + `collate_teacher` make it.
    Returns a scalar."""
    term = torch.zeros((), device=batch["input_ids"].device)
    if not white_box:
        return term
    size = batch["input_ids"].shape[0]
    for teacher in white_box:
        rows = batch["task"] == teacher.task
        if not bool(rows.any()):
            continue
        with torch.no_grad():
            teacher_logits = teacher.model(
                input_ids=batch["teacher_input_ids"][rows],
                attention_mask=batch["teacher_attention_mask"][rows],
            ).logits
        if isinstance(student_logits, Tensor):
            student = _target_logits(student_logits[rows], batch["labels"][rows], shift=not is_seq2seq)
        else:
            student = student_logits(rows)
        reference = _target_logits(teacher_logits, batch["teacher_labels"][rows], shift=True)
        if student.shape[0] != reference.shape[0]:  # a bug, not a user mistake: the sides must align
            raise RuntimeError(
                f"white-box KL: {student.shape[0]} student vs {reference.shape[0]} teacher tokens"
            )
        ones = torch.ones(1, student.shape[0], device=student.device)
        kl = kl_divergence(student.float()[None], reference.float()[None], ones, kind=kind)
        term = term + kl * rows.sum() / size
    return term

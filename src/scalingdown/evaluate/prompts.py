"""Prompt formats: zero-shot, few-shot chain-of-thought, and a student's own trained format.

All formats share the "Question: ...\\nAnswer:" frame that lm-evaluation-harness's gsm8k task uses,
so a model sees the same text here as there. Options of a multiple-choice problem follow the question.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from scalingdown.data.schema import Problem
from scalingdown.errors import UserError

PROMPT_FORMATS = ("zero-shot", "few-shot", "student")


def question_block(problem: Problem) -> str:
    """The question, plus its options on one line each for multiple choice."""
    text = problem.question.strip()
    if problem.options:
        text += "\nOptions: " + " ".join(f"{k}) {v}" for k, v in problem.options.items())
    return text


def final_answer_line(problem: Problem) -> str:
    return f"The answer is {problem.answer}."


def worked_solution(problem: Problem) -> str:
    """Gold rationale then the final answer sentence; the completion a model should learn to write."""
    if not problem.rationale:
        return final_answer_line(problem)
    return f"{problem.rationale.strip()}\n{final_answer_line(problem)}"


def zero_shot(problem: Problem) -> str:
    return f"Question: {question_block(problem)}\nAnswer:"


def worked_example(problem: Problem) -> str:
    """A full "Question: ... Answer: <solution>" block, used for few-shot exemplars and pretraining."""
    return f"{zero_shot(problem)} {worked_solution(problem)}"


def pick_exemplars(
    pool: Sequence[Problem], k: int, *, seed: int, exclude_id: str | None = None
) -> list[Problem]:
    """k worked examples from `pool` (seeded), never the problem itself; only ones with a rationale."""
    candidates = [p for p in pool if p.rationale and p.id != exclude_id]
    if k > len(candidates):
        raise UserError(
            f"few-shot prompting needs {k} training problems with rationales, found {len(candidates)}"
            + (
                ""
                if candidates
                else " (a data set without gold rationales can take a teacher's: eval.fewshot_teacher)"
            )
        )
    return random.Random(seed).sample(candidates, k)


def few_shot(problem: Problem, exemplars: Sequence[Problem]) -> str:
    shots = "\n\n".join(worked_example(p) for p in exemplars)
    return f"{shots}\n\n{zero_shot(problem)}" if shots else zero_shot(problem)


def from_template(problem: Problem, template: str) -> str:
    """A student's own format: a template with `{question}` (and optionally `{options}`).

    `{options}` renders as in `question_block` ("\nOptions: A) ... E) ..."), the way training wrote it.
    """
    options = question_block(problem)[len(problem.question.strip()) :]
    return template.format(question=problem.question.strip(), options=options)

"""A student's inference modes: how it is asked (`eval.student_mode`, `--mode`), and the vote over them.

A student trained by `scalingdown train` lists its modes in its `scalingdown.json` (`modes`): one per
task it learnt, each with the prompt template of that task's training examples, so a mode's prompt
is character for character the prompt the student was trained on for the same problem.

- `answer` (TinyLLM's inference): the answer task, "Question: ...\\nAnswer:" -> "The answer is X."
- `rationale:<teacher>`: that teacher's rationale task, "<its instruction>\\nQuestion: ...\\nRationale:";
  the student writes a rationale (stopped at its stop strings) and the answer is extracted from it
  by the usual scorer (`data.answers.score`), as from any other output.
- `single`: a pooled (Fine-tune-CoT) student's one task; question -> rationale then answer.
- `vote`: every mode above that the student has, generated together (one batched pass over all the
  prompts), and the majority over the modes' answers: self-consistency across the teachers the
  student learnt. Flexible and strict answers are voted separately. A mode with no answer does not
  vote. Ties go to the answer written first in mode order: the answer task first, then the rationale
  tasks in training order (the order of `modes`). With self-consistency samples, each mode's answer
  is first the majority over its own samples. A student with one mode votes with that mode alone.
- `auto` (the default): `answer` when the student has an answer task, else its first mode (`single`).
  The default is fixed rather than picked by accuracy: picking on the test set would leak it, and
  every train problem was learnt, so its accuracy there would measure memory, not the mode; a study
  that wants another mode names it (`vote` also reports every mode's own accuracy).
- `select`: the mode is chosen per trained replicate on the run's dev slice (`data.dev_size` train
  problems held out of teaching and training, `data/dev.jsonl`), never on the test set. Every mode and
  the vote are evaluated on the dev slice; the rule (`choose`) takes the highest flexible accuracy there,
  ties going to the cheaper mode: the answer task (or `single`), then the rationale tasks in training
  order, then the vote (it generates every mode). The test set is then answered in the chosen mode
  alone, as a deployed student would be; each mode's dev accuracy is recorded beside it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from scalingdown.data.answers import answers_match, majority_vote
from scalingdown.data.schema import Problem
from scalingdown.errors import UserError
from scalingdown.evaluate.prompts import from_template

AUTO = "auto"
VOTE = "vote"
SELECT = "select"
ANSWER = "answer"
SETTING = "eval.student_mode"  # the config key a wrong mode is reported under (`--mode` on the CLI)


@dataclass(frozen=True)
class ModePlan:
    """A resolved mode: `mode` is what is evaluated ('vote' or one of the student's modes), `modes`
    the student's modes that are generated for it, in vote order, each with its prompt template."""

    mode: str
    modes: dict[str, str]

    @property
    def voting(self) -> bool:
        return self.mode == VOTE


def student_modes(meta: Mapping) -> dict[str, str]:
    """The student's modes (name -> prompt template), in their recorded order.

    A student saved before modes were recorded has one: its `prompt_template`, named after its format
    ('single' for the single format, else 'answer')."""
    modes = meta.get("modes")
    if isinstance(modes, dict) and modes:
        out = {}
        for name, spec in modes.items():
            template = spec.get("template") if isinstance(spec, dict) else None
            if not isinstance(template, str):
                raise UserError(f"modes.{name}: needs a string 'template'", path="scalingdown.json")
            out[name] = template
        return out
    return {"single" if meta.get("format") == "single" else ANSWER: meta["prompt_template"]}


def resolve_mode(meta: Mapping, asked: str) -> ModePlan:
    """The plan for mode `asked` ('auto', 'vote' or a mode name) of the student `meta` describes;
    a mode the student does not have is one `UserError` naming `eval.student_mode`."""
    modes = student_modes(meta)
    if asked == VOTE:
        return ModePlan(VOTE, modes)
    if asked == SELECT:
        raise UserError(f"{SETTING}: 'select' is chosen on the dev slice first (`evaluate.selection`)")
    mode = (ANSWER if ANSWER in modes else next(iter(modes))) if asked == AUTO else asked
    if mode not in modes:
        known = ", ".join([*modes, VOTE, AUTO])
        raise UserError(f"{SETTING}: {asked!r} is not a mode of this student (its modes: {known})")
    return ModePlan(mode, {mode: modes[mode]})


def selection_order(modes: Sequence[str]) -> list[str]:
    """The candidates of `select` in tie-break order: the student's modes as recorded (the answer
    task or `single` first, then the rationale tasks in training order), then the vote."""
    return [*modes, VOTE] if len(modes) > 1 else list(modes)


def choose(dev_accuracy: Mapping[str, float], order: Sequence[str]) -> str:
    """The documented rule of `select`: the highest dev accuracy; ties go to the earliest in `order`
    (`selection_order`: cheapest first)."""
    candidates = [mode for mode in order if mode in dev_accuracy]
    if not candidates:
        raise UserError(f"{SETTING}: 'select' found no mode measured on the dev slice")
    return max(candidates, key=dev_accuracy.__getitem__)  # max keeps the first of equal keys


def mode_prompts(problems: Sequence[Problem], plan: ModePlan) -> list[str]:
    """Every prompt of `plan`, mode by mode: prompt j asks problem j % N in mode j // N (N problems)."""
    return [from_template(p, template) for template in plan.modes.values() for p in problems]


def vote(problem: Problem, per_mode: Mapping[str, Mapping]) -> dict:
    """The majority over the modes' answers (`per_mode`: mode -> its `answer` and `strict_answer`, in
    vote order); ties go to the answer seen first in that order (`data.answers.majority_vote`)."""
    flexible = majority_vote([scores.get("answer") for scores in per_mode.values()])
    strict = majority_vote([scores.get("strict_answer") for scores in per_mode.values()])
    return verdict(problem, flexible, strict)


def verdict(problem: Problem, flexible: str | None, strict: str | None) -> dict:
    """A prediction row's answers and whether each matches the gold answer."""
    choice = problem.is_choice
    return {
        "answer": flexible,
        "correct": answers_match(flexible, problem.answer, choice=choice),
        "strict_answer": strict,
        "strict_correct": answers_match(strict, problem.answer, choice=choice),
    }

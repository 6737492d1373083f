"""Training examples: (prompt, target) pairs of the answer, rationale and single-sequence tasks.

Formats (the student's `format`):
- multitask (TinyLLM): per problem one *answer* example,
      "Question: {question}{options}\\nAnswer:" -> " The answer is {answer}."
  and per kept rationale of teacher T one *rationale:T* example, behind a teacher-specific instruction,
      "Explain like T would.\\nQuestion: {question}{options}\\nRationale:" -> " {rationale}".
- single (Fine-tune-CoT): per kept rationale one example,
      "Question: {question}{options}\\nAnswer:" -> " {rationale}", the rationale ending "The answer is X.".

The answer prompt is exactly the evaluation's zero-shot prompt (`evaluate.prompts.zero_shot`), and
`student_prompt_record` writes it and each teacher's rationale template to the student's directory,
so `scalingdown eval --prompt student` asks the question the way the student learnt to answer it, in
any of its modes. `train.combine` decides which rationales become examples (a student's `combine`).
Rationales come from the teach stage's `teachers/<name>/rationales.jsonl`; by default only verified
ones are learnt.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from scalingdown.artifacts import iter_jsonl
from scalingdown.data.answers import score
from scalingdown.data.schema import Problem
from scalingdown.data.stage import load_run_problems
from scalingdown.errors import UserError
from scalingdown.evaluate.prompts import final_answer_line, question_block
from scalingdown.train.objective import ANSWER_TASK, RATIONALE_PREFIX, SINGLE_TASK, rationale_task

ANSWER_TEMPLATE = "Question: {question}{options}\nAnswer:"
RATIONALE_TEMPLATE = "{instruction}\nQuestion: {question}{options}\nRationale:"
DEFAULT_INSTRUCTION = "Explain like {teacher} would."
# Generation of a student stops at its eos; these are a safety net should it ramble on into a new
# question. A rationale may span lines but never holds a blank line (`rationale_text` makes sure).
STUDENT_STOP = ["\nQuestion:", "\n\n"]
RATIONALES_FILE = "rationales.jsonl"


@dataclass(frozen=True)
class TrainExample:
    """One training pair. `task` is 'answer', 'rationale:<teacher>' or 'single'."""

    problem_id: str
    task: str
    prompt: str
    target: str
    # The prompt the teacher wrote this rationale for (text or chat messages, as the teach stage sent
    # it), for the white-box KL term; None for answer examples and rationales without one.
    source_prompt: str | list | None = field(default=None, compare=False)


def options_field(problem: Problem) -> str:
    """The `{options}` field: "\\nOptions: A) .. E) .." for multiple choice, "" otherwise; it is
    exactly what `question_block` puts after the question in the zero-shot prompt."""
    return question_block(problem)[len(problem.question.strip()) :]


def answer_prompt(problem: Problem) -> str:
    """ANSWER_TEMPLATE filled in: the evaluation's zero-shot prompt, character for character."""
    return ANSWER_TEMPLATE.format(question=problem.question.strip(), options=options_field(problem))


def rationale_prompt(problem: Problem, instruction: str) -> str:
    return RATIONALE_TEMPLATE.format(
        instruction=instruction, question=problem.question.strip(), options=options_field(problem)
    )


def rationale_text(text: str) -> str:
    """A rationale as a target: stripped, blank lines collapsed into single line breaks (so that the
    "\\n\\n" stop of evaluation never cuts a student's reasoning short)."""
    lines = [line.rstrip() for line in text.strip().splitlines()]
    return "\n".join(line for line in lines if line)


def _teacher_names(teachers_dir: Path) -> list[str]:
    if not teachers_dir.is_dir():
        return []
    return sorted(p.name for p in teachers_dir.iterdir() if (p / RATIONALES_FILE).is_file())


def _read_rows(path: Path, train_ids: set[str], include_unverified: bool, counts: Counter) -> list[dict]:
    rows = []
    for line, row in iter_jsonl(path):
        for key, kind in (("problem_id", str), ("text", str)):
            if not isinstance(row.get(key), kind):
                raise UserError(f"rationale row needs a string '{key}'", path=path, line=line)
        if row["problem_id"] not in train_ids:
            raise UserError(
                f"problem_id {row['problem_id']!r} is not a train problem of this run", path=path, line=line
            )
        if not (row.get("verified") is True or include_unverified):
            counts["unverified_dropped"] += 1
            continue
        rows.append(row)
    return rows


def load_rationales(
    run_dir: str | Path,
    teachers: Sequence[str] | None,
    *,
    problems: Iterable[Problem] | None = None,
    where: str = "students[0].teachers",
    include_unverified: bool = False,
    counts: Counter | None = None,
) -> dict[str, list[dict]]:
    """Kept rationale rows of each teacher, from `teachers/<name>/rationales.jsonl`.

    `teachers` None means every teacher that has a rationales file (sorted by name); otherwise the
    result follows the given order. `problems` are the run's train problems (default: the data stage's
    `data/train.jsonl`): a row about any other problem is a `UserError` naming the file and line.
    Rows whose `verified` is not true (a 'flag' or 'keep' policy kept them) are dropped unless
    `include_unverified`. `counts`, when given, gets 'unverified_dropped' and per-teacher
    'rows:<name>' added.
    """
    counts = Counter() if counts is None else counts
    teachers_dir = Path(run_dir) / "teachers"
    existing = _teacher_names(teachers_dir)
    if teachers is None:
        if not existing:
            raise UserError("no teacher rationales here: run `scalingdown teach` first", path=teachers_dir)
        teachers = existing
    if problems is None:
        problems = load_run_problems(run_dir, "train")
    train_ids = {p.id for p in problems}
    out: dict[str, list[dict]] = {}
    for j, name in enumerate(teachers):
        if name not in existing:
            known = ", ".join(existing) if existing else "none (run `scalingdown teach` first)"
            what = "has no rationales" if (teachers_dir / name).is_dir() else "is not a teacher of this run"
            raise UserError(f"{where}[{j}]: {name!r} {what}; teachers with rationales: {known}")
        if name in out:
            raise UserError(f"{where}[{j}]: teacher {name!r} is named twice")
        rows = _read_rows(teachers_dir / name / RATIONALES_FILE, train_ids, include_unverified, counts)
        counts[f"rows:{name}"] += len(rows)
        out[name] = rows
    return out


def _ends_with_answer(problem: Problem, text: str) -> bool:
    """Whether the text states its final answer explicitly (what strict answer extraction reads)."""
    return score(problem, text).strict_answer is not None


def build_examples(
    problems: Sequence[Problem],
    rationales: Mapping[str, Sequence[dict]],
    *,
    fmt: Literal["multitask", "single"],
    instructions: Mapping[str, str] | None = None,
    counts: Counter | None = None,
) -> list[TrainExample]:
    """The training examples of `problems` in format `fmt`, in a deterministic order: problem by
    problem (in the given order), the answer example first, then the teachers in `rationales` order,
    each teacher's samples by their `sample` number.

    `instructions` maps a teacher to its own instruction line (default "Explain like <teacher> would.").
    Empty rationales are skipped. `counts`, when given, gets per-task example counts and
    'empty_rationales', 'problems_without_rationale' and (single) 'answer_line_appended' added.
    """
    if fmt not in ("multitask", "single"):
        raise ValueError(f"unknown format {fmt!r} (expected 'multitask' or 'single')")
    counts = Counter() if counts is None else counts
    by_problem: dict[str, list[tuple[int, int, str, str, int]]] = defaultdict(list)
    sources: list[str | list | None] = []
    for order, (teacher, rows) in enumerate(rationales.items()):
        for row in rows:
            text = rationale_text(row["text"])
            if not text:
                counts["empty_rationales"] += 1
                continue
            by_problem[row["problem_id"]].append(
                (order, int(row.get("sample", 0)), teacher, text, len(sources))
            )
            sources.append(row.get("prompt"))
    examples: list[TrainExample] = []
    for problem in problems:
        kept = sorted(by_problem.get(problem.id, ()))
        if not kept:
            counts["problems_without_rationale"] += 1
        if fmt == "multitask":
            examples.append(
                TrainExample(
                    problem.id, ANSWER_TASK, answer_prompt(problem), " " + final_answer_line(problem)
                )
            )
        for _, _, teacher, text, source in kept:
            if fmt == "multitask":
                instruction = instruction_of(teacher, instructions)
                task, prompt = rationale_task(teacher), rationale_prompt(problem, instruction)
            else:
                if not _ends_with_answer(problem, text):
                    text = f"{text}\n{final_answer_line(problem)}"
                    counts["answer_line_appended"] += 1
                task, prompt = SINGLE_TASK, answer_prompt(problem)
            examples.append(TrainExample(problem.id, task, prompt, " " + text, sources[source]))
    counts.update(example.task for example in examples)
    return examples


def instruction_of(teacher: str, instructions: Mapping[str, str] | None = None) -> str:
    """The instruction line of a teacher's rationale task (default "Explain like <teacher> would.")."""
    return (instructions or {}).get(teacher) or DEFAULT_INSTRUCTION.format(teacher=teacher)


def rationale_template(instruction: str) -> str:
    """RATIONALE_TEMPLATE with the instruction filled in (its braces escaped), leaving `{question}` and
    `{options}`: what `evaluate.prompts.from_template` renders into `rationale_prompt`'s text."""
    escaped = instruction.replace("{", "{{").replace("}", "}}")
    return RATIONALE_TEMPLATE.replace("{instruction}", escaped)


def student_prompt_record(
    fmt: str, tasks: Sequence[str] | None = None, instructions: Mapping[str, str] | None = None
) -> dict:
    """What a student's `scalingdown.json` holds so that evaluation prompts it as it was trained.

    `modes`: one inference mode per task the student learnt (`tasks`, in task order; default: the
    answer task, or for the single format its one task), each with the prompt template of that
    task's training examples: 'answer' and 'single' ask the question in the answer frame,
    'rationale:<teacher>' behind that teacher's instruction. The evaluation's 'vote' is the majority
    over these modes, in this order. `prompt_template` (the answer frame) and `stop` serve every mode.
    """
    if tasks is None:
        tasks = [SINGLE_TASK if fmt == "single" else ANSWER_TASK]
    modes = {}
    for task in tasks:
        teacher = task.removeprefix(RATIONALE_PREFIX)
        if teacher != task:
            instruction = instruction_of(teacher, instructions)
            modes[task] = {"template": rationale_template(instruction), "teacher": teacher}
        else:
            modes[task] = {"template": ANSWER_TEMPLATE}
    return {"format": fmt, "prompt_template": ANSWER_TEMPLATE, "stop": list(STUDENT_STOP), "modes": modes}


def data_hash(examples: Iterable[TrainExample]) -> str:
    """sha256 of the examples in order (one JSON line each, so field boundaries are unambiguous)."""
    digest = hashlib.sha256()
    for ex in examples:
        line = json.dumps([ex.problem_id, ex.task, ex.prompt, ex.target], ensure_ascii=False)
        digest.update(line.encode("utf-8") + b"\n")
    return digest.hexdigest()

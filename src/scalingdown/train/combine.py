"""Teacher combination strategies: how a student's examples are made from several teachers' rationales.

A strategy turns the train problems, each teacher's kept rationales (`examples.load_rationales`, in
teacher order) and, for the ranking ones, each teacher's measured quality into the examples and task
weights the student learns, plus a record of what it decided and from which numbers (written into
the student's `scalingdown.json`, so a reader can redo the decision). The student config's `combine`
names the strategy; `STRATEGIES` is the registry, `combine_teachers` runs one.

- tasks (TinyLLM): the 'multitask' format. Per problem one answer example, per kept rationale of
  teacher i one `rationale:i` example; task weights gamma (`answer_weight`) and alpha_i
  (`rationale_weights`, default 1.0).
- pool (Fine-tune-CoT): the 'single' format. Every kept rationale of every teacher is an example of
  its own, question -> rationale then answer; one task, 'single'.
- route: one teacher per question. For each problem, the best-ranked teacher that has a *verified*
  rationale for it (rank: `rank_by`, higher first, ties by teacher order); only that teacher's
  verified rationales of the problem are learnt. It keeps the 'tasks' frame (an answer example per
  problem, one rationale task per teacher), so that route differs from tasks only in which
  rationales are learnt, and the student keeps every inference mode (answer, rationale:i, vote).
  A problem without any verified rationale keeps its answer example.
- weighted: 'tasks' with alpha_i set from each teacher's measured quality q_i (`rank_by`):

      alpha_i = K * q_i / sum_j q_j          (K teachers; when every q_j is 0: alpha_i = 1)

  so the alphas average 1, as the default alphas of 'tasks' do, and equal teachers get exactly the
  'tasks' student. The alphas and the q_i they came from are recorded.

Teacher quality comes from the teach stage's `teachers/<name>/stats.json`: `verified_share` (the
share of its train rationales whose answer matched the gold one, and whose arithmetic held when that
is checked) or `free_accuracy.accuracy` (its own accuracy answering held-out *test* problems without
the gold answer; the default `verified_share` uses train questions only).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from scalingdown.artifacts import read_json
from scalingdown.data.schema import Problem
from scalingdown.digests import file_digest
from scalingdown.errors import UserError
from scalingdown.train.examples import TrainExample, build_examples, rationale_text
from scalingdown.train.objective import task_weights

STATS_FILE = "stats.json"  # written by the teach stage beside rationales.jsonl
RANK_KEYS = ("verified_share", "free_accuracy")


@dataclass(frozen=True)
class TeacherQuality:
    """A teacher's measured quality, as its `stats.json` states it (None: not measured)."""

    verified_share: float | None
    free_accuracy: float | None
    stats_digest: str | None = None

    def value(self, rank_by: str) -> float | None:
        return self.verified_share if rank_by == "verified_share" else self.free_accuracy


@dataclass(frozen=True)
class CombineInputs:
    """What a strategy combines. `rationales` maps each teacher, in teacher order (the student's
    `teachers` list, else by name), to its kept rationale rows."""

    problems: Sequence[Problem]
    rationales: Mapping[str, Sequence[dict]]
    answer_weight: float = 1.0
    rationale_weights: Mapping[str, float] = field(default_factory=dict)
    quality: Mapping[str, TeacherQuality] = field(default_factory=dict)
    rank_by: str | None = None
    where: str = "students[0]"


@dataclass
class Combined:
    """A strategy's result: the examples (deterministic order), the weight of each task (in task-id
    order), what it decided (JSON-able) and example counts per task."""

    examples: list[TrainExample]
    task_weights: dict[str, float]
    record: dict
    counts: Counter

    @property
    def trained_tasks(self) -> list[str]:
        """The tasks that have examples, in task order: the student's inference modes."""
        return [task for task in self.task_weights if self.counts.get(task, 0) > 0]


@dataclass(frozen=True)
class Strategy:
    name: str
    frame: str  # the examples' format: 'multitask' (answer + rationale tasks) or 'single'
    ranks_teachers: bool  # needs each teacher's measured quality
    build: Callable[[CombineInputs], Combined]


STRATEGIES: dict[str, Strategy] = {}


def strategy(name: str, *, frame: str, ranks_teachers: bool = False):
    """Register a combination strategy under `name` (the value of a student's `combine`)."""

    def register(build: Callable[[CombineInputs], Combined]) -> Callable[[CombineInputs], Combined]:
        STRATEGIES[name] = Strategy(name, frame, ranks_teachers, build)
        return build

    return register


def get_strategy(name: str) -> Strategy:
    if name not in STRATEGIES:
        raise UserError(f"combine: unknown strategy {name!r}; known: {', '.join(STRATEGIES)}")
    return STRATEGIES[name]


def combine_teachers(name: str, inputs: CombineInputs) -> Combined:
    """Run strategy `name` on `inputs`; its record always names the strategy."""
    combined = get_strategy(name).build(inputs)
    combined.record = {"strategy": name, **combined.record}
    return combined


def read_teacher_quality(
    run_dir: str | Path, teachers: Sequence[str], *, rank_by: str, where: str
) -> dict[str, TeacherQuality]:
    """Each teacher's quality from `teachers/<name>/stats.json`; a missing file, or a teacher without
    the `rank_by` figure, is one `UserError` naming the config key."""
    out = {}
    for teacher in teachers:
        path = Path(run_dir) / "teachers" / teacher / STATS_FILE
        try:
            stats = read_json(path)
        except UserError:
            stats = None
        if not isinstance(stats, dict) or not isinstance(stats.get("verified_share"), (int, float)):
            raise UserError(
                f"{where}.combine: ranking teachers needs teachers/{teacher}/{STATS_FILE} with its "
                "verified_share (run `scalingdown teach`)"
            )
        free = stats.get("free_accuracy")
        free_accuracy = free.get("accuracy") if isinstance(free, dict) else None
        quality = TeacherQuality(
            verified_share=float(stats["verified_share"]),
            free_accuracy=float(free_accuracy) if isinstance(free_accuracy, (int, float)) else None,
            stats_digest=file_digest(path),
        )
        if quality.value(rank_by) is None:
            raise UserError(
                f"{where}.rank_by: teacher {teacher!r} has no measured free_accuracy (a replay teacher, "
                "or teach.free_eval_problems is 0); use rank_by: verified_share"
            )
        out[teacher] = quality
    return out


def multitask_weights(inputs: CombineInputs, alphas: Mapping[str, float]) -> dict[str, float]:
    """gamma for 'answer', then alpha_i (default 1.0) for each teacher's rationale task."""
    teachers = list(inputs.rationales)
    unknown = sorted(set(inputs.rationale_weights) - set(teachers))
    if unknown:
        raise UserError(
            f"{inputs.where}.rationale_weights.{unknown[0]}: not one of this student's teachers ({teachers})"
        )
    return task_weights("multitask", teachers, answer_weight=inputs.answer_weight, rationale_weights=alphas)


def _qualities(inputs: CombineInputs) -> dict[str, float]:
    """q_i of each teacher under `rank_by` (checked present by `read_teacher_quality`)."""
    missing = [t for t in inputs.rationales if t not in inputs.quality]
    if missing or inputs.rank_by not in RANK_KEYS:
        raise ValueError(f"ranking needs rank_by and the quality of every teacher (missing: {missing})")
    return {t: float(inputs.quality[t].value(inputs.rank_by)) for t in inputs.rationales}


def _quality_record(inputs: CombineInputs, q: Mapping[str, float]) -> dict:
    return {
        "rank_by": inputs.rank_by,
        "quality": dict(q),
        "stats_files": {t: inputs.quality[t].stats_digest for t in inputs.rationales},
    }


def rank_teachers(q: Mapping[str, float]) -> list[str]:
    """Teachers best first: higher quality first, ties in teacher order (the order of `q`)."""
    order = {t: i for i, t in enumerate(q)}
    return sorted(q, key=lambda t: (-q[t], order[t]))


@strategy("tasks", frame="multitask")
def tasks(inputs: CombineInputs) -> Combined:
    """TinyLLM: the answer task and one rationale task per teacher, alpha_i from the config."""
    counts: Counter = Counter()
    examples = build_examples(inputs.problems, inputs.rationales, fmt="multitask", counts=counts)
    return Combined(examples, multitask_weights(inputs, inputs.rationale_weights), {}, counts)


@strategy("pool", frame="single")
def pool(inputs: CombineInputs) -> Combined:
    """Fine-tune-CoT: every kept rationale of every teacher as its own single-format example."""
    counts: Counter = Counter()
    examples = build_examples(inputs.problems, inputs.rationales, fmt="single", counts=counts)
    return Combined(examples, task_weights("single", list(inputs.rationales)), {}, counts)


@strategy("route", frame="multitask", ranks_teachers=True)
def route(inputs: CombineInputs) -> Combined:
    """Per question the best-ranked teacher with a verified (non-empty) rationale; its rationales only."""
    q = _qualities(inputs)
    ranking = rank_teachers(q)
    verified = {
        t: {r["problem_id"] for r in rows if r.get("verified") is True and rationale_text(r["text"])}
        for t, rows in inputs.rationales.items()
    }
    chosen: dict[str, str] = {}
    for problem in inputs.problems:
        teacher = next((t for t in ranking if problem.id in verified[t]), None)
        if teacher is not None:
            chosen[problem.id] = teacher
    routed = {
        t: [r for r in rows if r.get("verified") is True and chosen.get(r["problem_id"]) == t]
        for t, rows in inputs.rationales.items()
    }
    counts: Counter = Counter()
    examples = build_examples(inputs.problems, routed, fmt="multitask", counts=counts)
    per_teacher = Counter(chosen.values())
    record = {
        **_quality_record(inputs, q),
        "ranking": ranking,
        "questions_routed": {t: per_teacher.get(t, 0) for t in inputs.rationales},
        "questions_without_verified_rationale": len(inputs.problems) - len(chosen),
    }
    return Combined(examples, multitask_weights(inputs, inputs.rationale_weights), record, counts)


def measured_alphas(q: Mapping[str, float]) -> dict[str, float]:
    """alpha_i = K * q_i / sum_j q_j (mean 1); every alpha 1 when no teacher has any quality."""
    total = sum(q.values())
    if total <= 0:
        return {t: 1.0 for t in q}
    return {t: len(q) * value / total for t, value in q.items()}


@strategy("weighted", frame="multitask", ranks_teachers=True)
def weighted(inputs: CombineInputs) -> Combined:
    """'tasks' with alpha_i from each teacher's measured quality (`measured_alphas`)."""
    q = _qualities(inputs)
    alphas = measured_alphas(q)
    counts: Counter = Counter()
    examples = build_examples(inputs.problems, inputs.rationales, fmt="multitask", counts=counts)
    record = {**_quality_record(inputs, q), "alphas": alphas, "rule": "alpha_i = K * q_i / sum_j q_j"}
    return Combined(examples, multitask_weights(inputs, alphas), record, counts)

"""Everything a run directory holds, read into plain records for the report.

One `ModelRecord` per evaluated (or expected) model and one `TeacherRecord` per teacher:

    eval/<model>/metrics.json, predictions.jsonl      accuracy (n, 95% CI), strict accuracy, latency,
                                                      tokens/s, peak memory, parameters, a student's
                                                      mode(s); per-problem `id` and `correct` for the
                                                      paired tests
    students/<name>/scalingdown.json                  training cost: seconds, steps, tokens, teachers,
                                                      combination strategy
    students/summary.json                             why a student failed to train
    models/<name>/tiny_build.json                     a locally built model's pretraining budget
    teachers/<name>/stats.json, usage.json, free.jsonl  rationale statistics, cost, free-mode answers
    manifest.json                                     time and cost of each stage

A model of the config's `models` list may carry a `published` accuracy (with its setting and
source); the record keeps it so the report shows it beside the measured one.

A missing or unreadable file never raises: the record lists what is missing and why, and the report
shows it. A model's kind: a name in `report.references` is a reference; otherwise a student, a
teacher or a model, by the config list that names it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from scalingdown.artifacts import iter_jsonl, read_json
from scalingdown.config import FORMAT_COMBINE, PublishedScore, StudyConfig
from scalingdown.digests import file_digest
from scalingdown.errors import UserError
from scalingdown.evaluate.metrics import Accuracy, accuracy
from scalingdown.layout import STUDENT_FILE, replicate_label, student_dir


@dataclass
class ModelRecord:
    """One model as the report sees it; `None` means not measured (the reason is in `missing`)."""

    name: str
    kind: str  # "student" | "reference" | "teacher" | "model"
    source: str = "none"  # where accuracy came from: "eval" or "teacher free mode"
    parameters: int | None = None
    accuracy: Accuracy | None = None
    strict_accuracy: float | None = None
    seconds_per_problem: float | None = None
    tokens_per_second: float | None = None
    tokens_per_problem: float | None = None
    peak_memory_bytes: int | None = None
    peak_memory_kind: str | None = None
    prompt_format: str | None = None
    train_seconds: float | None = None
    train_steps: int | None = None
    train_tokens: int | None = None
    final_loss: float | None = None
    trainable_parameters: int | None = None
    teachers: list[str] | None = None  # whose rationales a student learned from
    student_format: str | None = None  # "multitask" | "single"
    combine: str | None = None  # how a student combined its teachers: tasks, pool, route, weighted
    student_mode: str | None = None  # the inference mode its accuracy comes from (answer, vote, ...)
    mode_selected: bool = False  # chosen on the dev slice (eval.student_mode: select), not fixed
    mode_dev_accuracy: dict[str, float] = field(default_factory=dict)  # each mode on the dev slice
    mode_accuracy: dict[str, Accuracy] = field(default_factory=dict)  # every mode evaluated
    teacher_cost: float | None = None  # price of those teachers' rationales (usage.json)
    teacher_tokens: int | None = None
    published: PublishedScore | None = None  # a figure from elsewhere (models[].published)
    predictions: list[dict] = field(default_factory=list, repr=False)  # {"id", "correct"} per problem
    missing: list[str] = field(default_factory=list)
    # Replicates (a student trained once per seed): seed -> {problem id: correct}; `accuracy` is then
    # the mean over seeds with the two-level interval in `pooled`, and `per_seed` lists each seed's.
    seed_outcomes: dict = field(default_factory=dict, repr=False)
    per_seed: list[dict] = field(default_factory=list)
    pooled: dict | None = None
    quantized_from: str | None = None  # a quantised rung: the student it quantises
    quantization: str | None = None  # its kind ('int8', ...)
    weight_bytes: int | None = None  # the weights' bytes in memory, as evaluated
    speed: dict | None = None  # the dedicated speed measurement (evaluate.speed)

    @property
    def evaluated(self) -> bool:
        return self.accuracy is not None

    @property
    def comparable(self) -> bool:
        """Has per-problem outcomes, so it can enter a paired test."""
        return bool(self.predictions) or bool(self.seed_outcomes)

    def apply_speed(self, speed: dict) -> None:
        """The dedicated speed measurement wins over the evaluation's own clock (latency, throughput
        and peak memory); it is measured once per student (its first replicate), so replicates share it."""
        self.speed = speed
        self.seconds_per_problem = speed.get("seconds_per_question", self.seconds_per_problem)
        self.tokens_per_second = speed.get("tokens_per_second_batched", self.tokens_per_second)
        self.peak_memory_bytes = speed.get("peak_memory_bytes", self.peak_memory_bytes)
        self.peak_memory_kind = speed.get("peak_memory_kind", self.peak_memory_kind)

    def outcomes(self) -> dict:
        """seed -> {problem id: correct}; a single run is one seed (None)."""
        if self.seed_outcomes:
            return self.seed_outcomes
        return {None: {r["id"]: r["correct"] for r in self.predictions}} if self.predictions else {}


@dataclass
class TeacherRecord:
    """One teacher's rationale statistics (teachers/<name>/stats.json) and cost (usage.json)."""

    name: str
    backend: str | None = None
    model: str | None = None
    mode: str | None = None
    questions: int | None = None
    rationales: int | None = None
    kept: int | None = None
    kept_share: float | None = None
    verified: int | None = None
    verified_share: float | None = None
    wrong_answer: int | None = None
    arithmetic_error_rationales: int | None = None
    # Verdict category -> count (teach.verify.CATEGORIES); None in stats.json written before them.
    categories: dict[str, int] | None = None
    free_accuracy: Accuracy | None = None
    seconds: float | None = None
    rationale_cost: float | None = None
    rationale_tokens: int | None = None
    total_cost: float | None = None
    failed_requests: int | None = None
    error: str | None = None
    missing: list[str] = field(default_factory=list)


@dataclass
class RunRecords:
    run_dir: Path
    study_name: str
    models: list[ModelRecord]
    teachers: list[TeacherRecord]
    stages: dict[str, dict] = field(default_factory=dict)  # manifest.json "stages"

    def model(self, name: str) -> ModelRecord | None:
        return next((m for m in self.models if m.name == name), None)


def _relative(path: Path, run_dir: Path) -> str:
    try:
        return str(path.relative_to(run_dir))
    except ValueError:
        return str(path)


def _read_optional(path: Path, run_dir: Path, missing: list[str], absent: str | None) -> Any:
    """The JSON at `path`, or None with a note in `missing` (`absent`: the note for a missing file,
    None for a file whose absence is normal)."""
    if not path.is_file():
        if absent is not None:
            missing.append(f"{_relative(path, run_dir)} not found ({absent})")
        return None
    try:
        return read_json(path)
    except UserError as exc:
        missing.append(f"{_relative(path, run_dir)} unreadable: {exc}")
        return None


def _accuracy(obj: Any) -> Accuracy | None:
    if not isinstance(obj, dict):
        return None
    names = {f.name for f in fields(Accuracy)}
    try:
        return Accuracy(**{k: v for k, v in obj.items() if k in names})
    except TypeError:
        return None


def read_outcomes(path: Path, run_dir: Path, missing: list[str], *, id_key: str = "id") -> list[dict]:
    """`[{"id", "correct"}]` from a JSONL of per-problem rows; [] with a note when unusable.

    Rows with an `error` (a teacher request that failed) are left out: they were never answered."""
    if not path.is_file():
        missing.append(f"{_relative(path, run_dir)} not found (no per-problem outcomes for paired tests)")
        return []
    rows, seen = [], set()
    try:
        for number, row in iter_jsonl(path):
            if row.get("error"):
                continue
            pid, correct = row.get(id_key), row.get("correct")
            if not isinstance(pid, str) or not isinstance(correct, bool):
                raise UserError(f"needs a string '{id_key}' and a boolean 'correct'", path=path, line=number)
            if pid in seen:
                raise UserError(f"problem id {pid!r} appears twice", path=path, line=number)
            seen.add(pid)
            rows.append({"id": pid, "correct": correct})
    except UserError as exc:
        missing.append(f"{_relative(path, run_dir)} unusable: {exc}")
        return []
    if not rows:
        missing.append(f"{_relative(path, run_dir)} holds no answered problem")
    return rows


def _read_eval(
    record: ModelRecord, run_dir: Path, test_digest: str | None, folder: Path | None = None
) -> None:
    folder = folder if folder is not None else run_dir / "eval" / record.name
    metrics = _read_optional(folder / "metrics.json", run_dir, record.missing, "the model was not evaluated")
    if metrics is None and not folder.is_dir():
        return
    measured_on = metrics.get("test_digest") if isinstance(metrics, dict) else None
    if test_digest is not None and measured_on != test_digest:
        # Scored against other problems than data/test.jsonl holds now (or, for an old run, unknown
        # ones): its numbers would be compared with the wrong gold answers, so they stay out.
        why = "test set unknown" if measured_on is None else "data/test.jsonl changed since"
        record.missing.append(
            f"{_relative(folder, run_dir)} is stale ({why}): evaluate it again (`scalingdown eval`)"
        )
        return
    record.predictions = read_outcomes(folder / "predictions.jsonl", run_dir, record.missing)
    if isinstance(metrics, dict):
        record.source = "eval"
        record.accuracy = _accuracy(metrics.get("accuracy"))
        strict = _accuracy(metrics.get("strict_accuracy"))
        record.strict_accuracy = strict.accuracy if strict else None
        record.parameters = metrics.get("num_parameters")
        record.seconds_per_problem = metrics.get("seconds_per_problem")
        record.tokens_per_second = metrics.get("tokens_per_second")
        record.tokens_per_problem = metrics.get("generated_tokens_per_problem")
        memory = metrics.get("peak_memory") or {}
        record.peak_memory_bytes = memory.get("bytes") if isinstance(memory, dict) else None
        record.peak_memory_kind = memory.get("kind") if isinstance(memory, dict) else None
        record.prompt_format = metrics.get("prompt_format")
        record.weight_bytes = metrics.get("weight_bytes")
        speed = metrics.get("speed")
        if isinstance(speed, dict):
            record.apply_speed(speed)
        record.student_mode = metrics.get("student_mode")
        record.mode_selected = metrics.get("student_mode_asked") == "select"
        selection = metrics.get("mode_selection")
        dev = selection.get("dev_accuracy") if isinstance(selection, dict) else None
        if isinstance(dev, dict):
            record.mode_dev_accuracy = {m: float(v) for m, v in dev.items() if isinstance(v, (int, float))}
        modes = metrics.get("modes")
        for mode, figures in (modes if isinstance(modes, dict) else {}).items():
            acc = _accuracy(figures.get("accuracy")) if isinstance(figures, dict) else None
            if acc is not None:
                record.mode_accuracy[mode] = acc
    if record.accuracy is None and record.predictions:
        record.source = "eval"
        record.accuracy = accuracy([r["correct"] for r in record.predictions])


def _read_free_mode(record: ModelRecord, run_dir: Path) -> None:
    """A teacher without an eval of its own: its free-mode answers on test problems (teach stage)."""
    folder = run_dir / "teachers" / record.name
    notes: list[str] = []
    rows = read_outcomes(folder / "free.jsonl", run_dir, notes, id_key="problem_id")
    if rows:
        record.predictions = rows
        record.accuracy = accuracy([r["correct"] for r in rows])
        record.source = "teacher free mode"
    else:
        record.missing.extend(notes)


def _read_training(
    record: ModelRecord, run_dir: Path, failures: dict, seed: int | None = None, name: str | None = None
) -> None:
    name = name or record.name
    meta_path = student_dir(run_dir, name, seed) / STUDENT_FILE
    why = "not trained"
    failure = failures.get(replicate_label(name, seed)) if isinstance(failures, dict) else None
    if isinstance(failure, dict) and failure.get("error"):
        why = f"training failed: {failure['error']}"
    meta = _read_optional(meta_path, run_dir, record.missing, why)
    if not isinstance(meta, dict):
        return
    record.train_seconds = meta.get("train_seconds")
    record.train_steps = meta.get("steps")
    speed = meta.get("tokens_per_second")
    if isinstance(speed, (int, float)) and isinstance(record.train_seconds, (int, float)):
        record.train_tokens = round(speed * record.train_seconds)
    record.final_loss = meta.get("final_loss")
    record.trainable_parameters = meta.get("trainable_parameters")
    record.teachers = meta.get("teachers")
    record.student_format = meta.get("format")
    combine = meta.get("combine")
    # A student saved before strategies were recorded names only its format, whose strategy it was.
    record.combine = (
        combine.get("strategy") if isinstance(combine, dict) else FORMAT_COMBINE.get(meta.get("format"))
    )
    if record.parameters is None:
        record.parameters = meta.get("total_parameters")


def _read_tiny_build(record: ModelRecord, run_dir: Path) -> None:
    """A model built locally: its pretraining is its training budget."""
    build = _read_optional(
        run_dir / "models" / record.name / "tiny_build.json", run_dir, record.missing, None
    )
    if not isinstance(build, dict):
        return
    record.train_seconds = build.get("build_seconds")
    record.train_steps = len(build.get("pretrain_losses") or [])
    if record.parameters is None:
        record.parameters = build.get("num_parameters")


def read_teacher(name: str, run_dir: Path) -> TeacherRecord:
    record = TeacherRecord(name=name)
    folder = run_dir / "teachers" / name
    stats = _read_optional(folder / "stats.json", run_dir, record.missing, "the teach stage has not run")
    if isinstance(stats, dict):
        record.error = stats.get("error")
        for key in ("backend", "model", "mode", "questions", "rationales", "kept", "kept_share", "verified"):
            setattr(record, key, stats.get(key))
        for key in ("verified_share", "wrong_answer", "arithmetic_error_rationales", "seconds"):
            setattr(record, key, stats.get(key))
        categories = stats.get("categories")
        record.categories = categories if isinstance(categories, dict) else None
        record.free_accuracy = _accuracy(stats.get("free_accuracy"))
    if record.error:
        record.missing.append(f"teacher failed: {record.error}")
        return record
    usage = _read_optional(folder / "usage.json", run_dir, record.missing, "no cost figures")
    if isinstance(usage, dict):
        rationales = usage.get("rationales") or {}
        record.rationale_cost = rationales.get("cost")
        record.rationale_tokens = (rationales.get("prompt_tokens") or 0) + (
            rationales.get("completion_tokens") or 0
        )
        record.failed_requests = rationales.get("failed")
        record.total_cost = usage.get("cost")
    return record


def kind_of(name: str, study: StudyConfig, references: list[str]) -> str:
    if name in references:
        return "reference"
    if name in {s.name for s in study.students}:
        return "student"
    if name in {t.name for t in study.teachers}:
        return "teacher"
    return "model"


def _teacher_cost(record: ModelRecord, teachers: dict[str, TeacherRecord]) -> None:
    """A student's share of the teaching bill: the rationales of the teachers it learned from."""
    if not record.teachers:
        return
    chosen = [teachers.get(t) for t in record.teachers]
    if all(t is not None and t.rationale_cost is not None for t in chosen):
        record.teacher_cost = sum(t.rationale_cost for t in chosen)
        record.teacher_tokens = sum(t.rationale_tokens or 0 for t in chosen)


def collect_run(study: StudyConfig, references: list[str]) -> RunRecords:
    """Read the run directory of `study` into records; never raises for missing or broken files."""
    run_dir = Path(study.run_dir)
    eval_root = run_dir / "eval"
    # Models scored outside the config (`scalingdown eval --predictions`) have an eval folder too.
    eval_dirs = sorted(
        p.name for p in (eval_root.iterdir() if eval_root.is_dir() else []) if p.is_dir() and p.name[0] != "."
    )
    teacher_names = [t.name for t in study.teachers]
    student_names = [s.name for s in study.students]
    names = list(
        dict.fromkeys(student_names + [m.name for m in study.models] + teacher_names + references + eval_dirs)
    )
    teachers = {name: read_teacher(name, run_dir) for name in teacher_names}
    test_digest = file_digest(run_dir / "data" / "test.jsonl")
    failures = _read_optional(run_dir / "students" / "summary.json", run_dir, [], None) or {}

    published = {m.name: m.published for m in study.models}
    models = []
    for name in names:
        record = ModelRecord(name=name, kind=kind_of(name, study, references), published=published.get(name))
        is_teacher = name in teachers
        if is_teacher and not (run_dir / "eval" / name).is_dir():
            if name not in references and not (run_dir / "teachers" / name / "free.jsonl").is_file():
                continue  # a teacher with no answers on test problems appears in the teacher table only
            _read_free_mode(record, run_dir)
        elif name not in student_names:
            _read_eval(record, run_dir, test_digest)
        if name in student_names:
            for student in read_student(name, run_dir, test_digest, failures, references):
                _teacher_cost(student, teachers)
                models.append(student)
            continue
        if name in {m.name for m in study.models}:
            _read_tiny_build(record, run_dir)
        elif not is_teacher and name in references and name not in eval_dirs:
            record.missing.insert(0, f"reference {name!r} is not a model, student or teacher of this study")
        models.append(record)

    manifest = _read_optional(run_dir / "manifest.json", run_dir, [], None)
    stages = manifest.get("stages", {}) if isinstance(manifest, dict) else {}
    return RunRecords(
        run_dir=run_dir,
        study_name=study.name,
        models=models,
        teachers=list(teachers.values()),
        stages=stages if isinstance(stages, dict) else {},
    )


def read_student(
    name: str, run_dir: Path, test_digest: str | None, failures: dict, references: list[str]
) -> list[ModelRecord]:
    """A student's record, pooled over its replicates when it has seed folders, then one record per
    quantised rung (`<name>-<kind>`, e.g. `s64-int8`), each pooled the same way."""
    from scalingdown.report.replicates import pool_replicates, rung_kinds

    kind = "reference" if name in references else "student"
    main = pool_replicates(ModelRecord(name=name, kind=kind), run_dir, test_digest, failures, None)
    records = [main]
    for quant in rung_kinds(run_dir, name):
        rung = ModelRecord(name=f"{name}-{quant}", kind="student", quantized_from=name, quantization=quant)
        records.append(pool_replicates(rung, run_dir, test_digest, failures, quant, student=name))
    return records

"""`scalingdown run --dry-run`: what a study will do and roughly what the teachers will cost, before
anything runs. Nothing is downloaded or loaded: sizes come from the config (or the data stage's
files when they exist), token counts are estimates (4 characters a token for prompts, `max_tokens`
for completions, an upper bound).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from scalingdown.config import StudyConfig, TeacherConfig, TinyModelConfig
from scalingdown.errors import UserError

# Split sizes of the real data sets, for planning before the data stage has run: on the Hub, and
# where a local copy has other splits (SVAMP's ReFT files: 3,076 MAWPS/ASDiv-A train problems and the
# 1,000 challenge problems as test; the Hub cuts the challenge problems 700 / 300).
KNOWN_SIZES = {"gsm8k": (7473, 1319), "aqua_rat": (97467, 254), "svamp": (700, 300)}
LOCAL_SIZES = {"svamp": (3076, 1000)}
CHARS_PER_TOKEN = 4
TEACHER_PROMPT_CHARS = 600  # the built-in teacher-forcing template around a question, without examples


@dataclass
class TeacherPlan:
    name: str
    backend: str
    model: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cost: float


def split_sizes(study: StudyConfig) -> tuple[int, int]:
    """Train and test problem counts: from data/ when the data stage ran with this data config, else
    from the config."""
    from scalingdown.data.stage import current_report

    data_dir = Path(study.run_dir) / "data"
    if current_report(study, study.run_dir) is not None:
        return tuple(
            sum(1 for line in (data_dir / f"{s}.jsonl").open() if line.strip()) for s in ("train", "test")
        )
    data = study.data
    if data.dataset == "synthetic":
        train, test = data.synthetic.n_train, data.synthetic.n_test
    else:
        local = LOCAL_SIZES.get(data.dataset) if data.path is not None else None
        train, test = local or KNOWN_SIZES[data.dataset]
    return min(train, data.train_limit or train), min(test, data.test_limit or test)


def tiny_parameters(tiny: TinyModelConfig) -> int:
    """Approximate parameters of a tiny Llama-style model (embeddings tied, MLP 4x wide)."""
    h = tiny.hidden_size
    per_layer = 4 * h * h + 3 * h * 4 * h
    return tiny.vocab_size * h + tiny.num_layers * per_layer


def question_tokens(teacher: TeacherConfig, study: StudyConfig) -> tuple[int, int]:
    """Estimated (prompt, completion) tokens of one teacher-forcing question, before any is asked:
    the template and its in-context examples at ~4 characters a token, completions at max_tokens."""
    mean_question = 300 if study.data.dataset != "synthetic" else 150
    prompt_chars = TEACHER_PROMPT_CHARS + mean_question * (1 + teacher.num_examples * 2)
    return prompt_chars // CHARS_PER_TOKEN, teacher.sampling.n * teacher.sampling.max_tokens


def teacher_plans(study: StudyConfig, train: int, test: int) -> list[TeacherPlan]:
    plans = []
    questions = min(train, study.teach.limit or train)
    free = min(test, study.teach.free_eval_problems)
    for teacher in study.teachers:
        per_prompt, _ = question_tokens(teacher, study)
        requests = questions + free
        prompt_tokens = requests * per_prompt
        completion_tokens = (questions * teacher.sampling.n + free) * teacher.sampling.max_tokens
        cost = (
            prompt_tokens * teacher.price_input_per_1k + completion_tokens * teacher.price_output_per_1k
        ) / 1000
        plans.append(
            TeacherPlan(
                teacher.name,
                teacher.backend,
                teacher.model or "tiny (built locally)",
                requests,
                prompt_tokens,
                completion_tokens,
                cost,
            )
        )
    return plans


def check_plan(study: StudyConfig) -> list[str]:
    """Problems with the study's design, as warnings (the run still goes on)."""
    warnings = []
    names = (
        {s.name for s in study.students} | {m.name for m in study.models} | {t.name for t in study.teachers}
    )
    for ref in study.report.references:
        if ref not in names:
            warnings.append(f"report.references: {ref!r} is not a model, student or teacher of this study")
    if study.report.references and not study.students:
        warnings.append("students: the ladder is empty, so no student can beat the references")
    sizes = {s.name: tiny_parameters(s.tiny) for s in study.students if s.tiny is not None}
    for ref in study.report.references:
        if ref in sizes:
            for name, size in sizes.items():
                if name not in study.report.references and size >= sizes[ref]:
                    warnings.append(
                        f"students: {name!r} (~{size:,} params) is not smaller than reference {ref!r}"
                    )
    return warnings


def print_plan(study: StudyConfig, console) -> None:
    from rich.table import Table

    try:
        train, test = split_sizes(study)
    except (KeyError, OSError) as exc:
        raise UserError(f"data: cannot size the data set for the plan ({exc})") from None
    console.print(
        f"study {study.name}: {study.data.dataset}, {train:,} train / {test:,} test problems "
        f"-> {study.run_dir}"
    )
    table = Table(title="teachers (estimated)")
    for column in ("teacher", "backend", "model", "requests", "prompt tokens", "completion tokens", "cost"):
        table.add_column(column, justify="left" if column in ("teacher", "backend", "model") else "right")
    total = 0.0
    for plan in teacher_plans(study, train, test):
        total += plan.cost
        table.add_row(
            plan.name,
            plan.backend,
            plan.model,
            f"{plan.requests:,}",
            f"{plan.prompt_tokens:,}",
            f"{plan.completion_tokens:,}",
            f"{plan.cost:.2f}",
        )
    if study.teachers:
        console.print(table)
        console.print(
            f"estimated teacher cost: {total:.2f} (prompts at ~4 characters a token, "
            "completions at max_tokens)"
        )
    students = Table(title="students")
    for column in ("student", "base", "params", "method", "combine", "teachers"):
        students.add_column(column)
    for s in study.students:
        size = f"~{tiny_parameters(s.tiny):,}" if s.tiny is not None else "(from the model)"
        teachers = "all" if s.teachers is None else (", ".join(s.teachers) or "none (answers only)")
        students.add_row(s.name, s.path or "tiny", size, s.method, s.combine, teachers)
    if study.students:
        console.print(students)
    for m in study.models:
        console.print(f"model {m.name}: {m.path or 'tiny'}, prompt {m.prompt or study.eval.prompt}")
    refs = ", ".join(study.report.references) or "none"
    console.print(f"references to beat: {refs} ({study.report.test}, alpha {study.report.alpha})")
    for warning in check_plan(study):
        console.print(f"[yellow]warning: {warning}")

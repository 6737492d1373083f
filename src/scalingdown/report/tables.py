"""The report's tables as text: each model's, teacher's and cost row, and the sentences that go with
them (crossover, quantisation loss, break-even). The pages (`pages.py`) lay them out as HTML and
Markdown; nothing here knows about either format."""

from __future__ import annotations

from typing import TYPE_CHECKING

from scalingdown.config import PublishedScore
from scalingdown.evaluate.metrics import Accuracy
from scalingdown.report.collect import ModelRecord, TeacherRecord
from scalingdown.report.costs import format_amount
from scalingdown.report.finder import Finding, describe, format_count

if TYPE_CHECKING:
    from scalingdown.report.pages import ReportContent


def fmt_accuracy(acc: Accuracy | None) -> str:
    if acc is None:
        return "missing"
    return f"{100 * acc.accuracy:.1f}% (n={acc.n}, 95% CI {100 * acc.ci_low:.1f}-{100 * acc.ci_high:.1f})"


def fmt_number(value: float | None, pattern: str = "{:.1f}", missing: str = "-") -> str:
    return missing if value is None else pattern.format(value)


def _memory(record: ModelRecord) -> str:
    if record.peak_memory_bytes is None:
        return "-"
    kind = {
        "cuda_max_allocated": "GPU",
        "process_max_rss": "process RSS",
        "process_peak_rss": "process RSS",
    }.get(record.peak_memory_kind or "", "")
    return f"{record.peak_memory_bytes / 2**20:,.0f} MiB {kind}".strip()


def _teacher_bill(record: ModelRecord) -> str:
    if record.teacher_cost is None:
        return "-"
    tokens = f"{record.teacher_tokens:,} tok" if record.teacher_tokens is not None else ""
    return f"{record.teacher_cost:.4g} ({tokens})" if tokens else f"{record.teacher_cost:.4g}"


MODEL_COLUMNS = (
    "Model",
    "Kind",
    "Params",
    "Weights",
    "Accuracy (n, 95% CI)",
    "Per seed",
    "Strict",
    "ms/problem",
    "tokens/s",
    "Peak memory",
    "Train time (s)",
    "Train steps",
    "Train tokens",
    "Teacher cost (tokens)",
    "Teachers",
)


def model_cells(m: ModelRecord) -> list[str]:
    acc = fmt_accuracy(m.accuracy)
    if m.source == "teacher free mode":
        acc += " [free mode]"
    seeds = ", ".join(f"{100 * s['accuracy']:.1f}" for s in m.per_seed if s["accuracy"] is not None)
    return [
        m.name,
        m.kind,
        format_count(m.parameters) if m.parameters else "-",
        "-" if m.weight_bytes is None else f"{m.weight_bytes / 2**20:,.2f} MiB",
        acc,
        f"{seeds} ({len(m.per_seed)} seed{'s' if len(m.per_seed) != 1 else ''})" if m.per_seed else "1 run",
        fmt_number(None if m.strict_accuracy is None else 100 * m.strict_accuracy, "{:.1f}%"),
        fmt_number(None if m.seconds_per_problem is None else 1000 * m.seconds_per_problem, "{:.1f}"),
        fmt_number(m.tokens_per_second, "{:.0f}"),
        _memory(m),
        fmt_number(m.train_seconds, "{:.0f}"),
        fmt_number(m.train_steps, "{:,.0f}"),
        fmt_number(m.train_tokens, "{:,.0f}"),
        _teacher_bill(m),
        "+".join(m.teachers) if m.teachers else "-",
    ]


PUBLISHED_COLUMN = "Published accuracy"


def fmt_published(published: PublishedScore | None) -> str:
    if published is None:
        return "-"
    return f"published: {published.value:g}% ({published.setting}; {published.source})"


def model_table(models: list[ModelRecord]) -> tuple[list[str], list[list[str]]]:
    """The model table's columns and rows. When any model has a published accuracy it gets a column
    right after ours, so the two figures are read side by side."""
    columns, rows = list(MODEL_COLUMNS), [model_cells(m) for m in models]
    if any(m.published is not None for m in models):
        at = columns.index("Accuracy (n, 95% CI)") + 1
        columns.insert(at, PUBLISHED_COLUMN)
        for model, row in zip(models, rows, strict=True):
            row.insert(at, fmt_published(model.published))
    return columns, rows


TEACHER_COLUMNS = (
    "Teacher",
    "Backend / model",
    "Mode",
    "Questions",
    "Rationales",
    "Kept",
    "Verified",
    "Wrong answer",
    "Arithmetic error",
    "No work",
    "Inconsistent chain",
    "Program failed",
    "Free-mode accuracy (n, 95% CI)",
    "Tokens",
    "Cost",
)


def _share(count: int | None, share: float | None) -> str:
    return "-" if count is None else f"{count:,} ({100 * (share or 0):.0f}%)"


_UNVERIFIED_COLUMNS = ("arithmetic_error", "no_work", "inconsistent_chain", "program_failed")


def _category(t: TeacherRecord, name: str) -> int | None:
    """How many rationales got verdict `name`; for stats.json without categories, the rationales with
    an arithmetic error (then counted whatever their answer) and nothing for the newer categories."""
    if t.categories is not None:
        return t.categories.get(name, 0)
    return t.arithmetic_error_rationales if name == "arithmetic_error" else None


def teacher_cells(t: TeacherRecord) -> list[str]:
    return [
        t.name,
        f"{t.backend or '?'} / {t.model or '?'}",
        t.mode or "-",
        fmt_number(t.questions, "{:,}"),
        fmt_number(t.rationales, "{:,}"),
        _share(t.kept, t.kept_share),
        _share(t.verified, t.verified_share),
        fmt_number(t.wrong_answer, "{:,}"),
        *(fmt_number(_category(t, name), "{:,}") for name in _UNVERIFIED_COLUMNS),
        fmt_accuracy(t.free_accuracy) if t.free_accuracy else "-",
        fmt_number(t.rationale_tokens, "{:,}"),
        fmt_number(t.total_cost, "{:.4g}"),
    ]


def crossover_line(f: Finding) -> str | None:
    fit = f.crossover
    if not fit:
        return None
    if fit.get("status") in ("bracketed", "extrapolated") and fit.get("n_star"):
        where = "within the ladder" if fit["status"] == "bracketed" else "EXTRAPOLATED beyond the ladder"
        return (
            f"Fitted crossover against {f.reference}: a student of about {format_count(fit['n_star'])} "
            f"parameters matches it (95% bootstrap interval {format_count(fit['ci_low'])}-"
            f"{format_count(fit['ci_high'])}; {where}; logistic fit over log parameters with chance floor "
            f"{fit['floor']:g})."
        )
    why = fit.get("reason", "no N* in range")
    return f"Fitted crossover against {f.reference}: {fit.get('status')} ({why})."


def loss_line(loss: dict, samples: int) -> str:
    saved = ""
    if loss.get("bytes") and loss.get("student_bytes"):
        saved = f", {loss['student_bytes'] / loss['bytes']:.1f}x fewer bytes"
    return (
        f"{loss['rung']} ({loss['kind']}{saved}) vs {loss['student']}: "
        f"{describe(loss['comparison'], samples)} "
        "(accuracy change from quantisation; two-sided, uncorrected)."
    )


def _count_or_never(value: float) -> str:
    return "never" if value == float("inf") else f"{value:,.0f}"


def break_even_lines(content: ReportContent) -> list[str]:
    """For each finding's winner: after how many correct answers its one-off cost is paid back."""
    winners = {(f.reference, f.winner) for f in content.findings if f.winner and f.scale == "parameters"}
    lines = []
    for row in content.costs:
        for ref, be in row["break_even"].items():
            if (ref, row["model"]) not in winners or be["value"] is None:
                continue
            lines.append(
                f"Break-even of {row['model']} against {ref}: {_count_or_never(be['value'])} correctly "
                "answered questions pay back its one-off cost of "
                f"{format_amount(row['one_off'], row['unit'])} "
                f"(teachers + training; 95% interval {_count_or_never(be['ci_low'])}-"
                f"{_count_or_never(be['ci_high'])})."
            )
    return lines


COST_COLUMNS = ("Model", "Unit", "Per 1,000 questions", "Per correct answer", "One-off (teachers + training)")


def cost_table(content: ReportContent) -> tuple[list[str], list[list[str]]]:
    refs = sorted({ref for row in content.costs for ref in row["break_even"]})
    columns = list(COST_COLUMNS) + [f"Break-even vs {ref} (correct answers, 95% CI)" for ref in refs]
    rows = []
    for row in content.costs:
        cells = [
            row["model"],
            row["unit"],
            format_amount(row["per_1000_questions"], row["unit"]),
            format_amount(row["per_correct"], row["unit"]),
            format_amount(row["one_off"], row["unit"]),
        ]
        for ref in refs:
            be = row["break_even"].get(ref)
            if be is None or be["value"] is None:
                cells.append("-")
            else:
                low, high = _count_or_never(be["ci_low"]), _count_or_never(be["ci_high"])
                cells.append(f"{_count_or_never(be['value'])} ({low}-{high})")
        rows.append(cells)
    return columns, rows

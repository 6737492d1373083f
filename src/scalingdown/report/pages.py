"""The report's pages: index.html (self-contained), README.md and results.csv.

Both pages say the same things in the same order: the findings in plain words, a table of every
model (each accuracy with its n and 95% CI), the plots, the teachers' statistics, the run's stages,
how to read the numbers, and what is missing. index.html embeds its plots as base64 PNG data URIs
and its CSS inline, so it opens from disk with no network; every piece of user text is escaped.
"""

from __future__ import annotations

import base64
import csv
import html
from dataclasses import dataclass, field
from pathlib import Path

from scalingdown.evaluate.metrics import Accuracy
from scalingdown.report.collect import ModelRecord, RunRecords, TeacherRecord
from scalingdown.report.finder import TEST_NAMES, AblationPair, Finding, format_count
from scalingdown.report.methods import Section
from scalingdown.report.plots import Plot


@dataclass
class ReportContent:
    records: RunRecords
    findings: list[Finding]
    pairs: list[AblationPair]
    plots: list[Plot]
    alpha: float
    test: str
    samples: int
    generated: str
    notes: list[str] = field(default_factory=list)  # report-level problems (e.g. no references)
    methods: list[Section] = field(default_factory=list)  # combination strategies and modes


# ---- numbers as text ------------------------------------------------------------------------------


def fmt_accuracy(acc: Accuracy | None) -> str:
    if acc is None:
        return "missing"
    return f"{100 * acc.accuracy:.1f}% (n={acc.n}, 95% CI {100 * acc.ci_low:.1f}-{100 * acc.ci_high:.1f})"


def _num(value: float | None, pattern: str = "{:.1f}", missing: str = "-") -> str:
    return missing if value is None else pattern.format(value)


def _memory(record: ModelRecord) -> str:
    if record.peak_memory_bytes is None:
        return "-"
    kind = {"cuda_max_allocated": "GPU", "process_max_rss": "process RSS"}.get(
        record.peak_memory_kind or "", ""
    )
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
    "Accuracy (n, 95% CI)",
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
    return [
        m.name,
        m.kind,
        format_count(m.parameters) if m.parameters else "-",
        acc,
        _num(None if m.strict_accuracy is None else 100 * m.strict_accuracy, "{:.1f}%"),
        _num(None if m.seconds_per_problem is None else 1000 * m.seconds_per_problem, "{:.1f}"),
        _num(m.tokens_per_second, "{:.0f}"),
        _memory(m),
        _num(m.train_seconds, "{:.0f}"),
        _num(m.train_steps, "{:,}"),
        _num(m.train_tokens, "{:,}"),
        _teacher_bill(m),
        "+".join(m.teachers) if m.teachers else "-",
    ]


TEACHER_COLUMNS = (
    "Teacher",
    "Backend / model",
    "Mode",
    "Questions",
    "Rationales",
    "Kept",
    "Verified",
    "Wrong answer",
    "Arithmetic errors",
    "Free-mode accuracy (n, 95% CI)",
    "Tokens",
    "Cost",
)


def _share(count: int | None, share: float | None) -> str:
    return "-" if count is None else f"{count:,} ({100 * (share or 0):.0f}%)"


def teacher_cells(t: TeacherRecord) -> list[str]:
    return [
        t.name,
        f"{t.backend or '?'} / {t.model or '?'}",
        t.mode or "-",
        _num(t.questions, "{:,}"),
        _num(t.rationales, "{:,}"),
        _share(t.kept, t.kept_share),
        _share(t.verified, t.verified_share),
        _num(t.wrong_answer, "{:,}"),
        _num(t.arithmetic_error_rationales, "{:,}"),
        fmt_accuracy(t.free_accuracy) if t.free_accuracy else "-",
        _num(t.rationale_tokens, "{:,}"),
        _num(t.total_cost, "{:.4g}"),
    ]


def finding_lines(content: ReportContent) -> list[str]:
    """The findings, then the ablation, then each reference's budget, as sentences."""
    lines = [f.statement() for f in content.findings]
    lines += [p.statement(content.samples) for p in content.pairs]
    for f in content.findings:
        ref = content.records.model(f.reference)
        if ref is not None and (ref.train_seconds or ref.train_steps):
            lines.append(
                f"Budget of {ref.name}: {format_count(ref.parameters)} params, "
                f"{_num(ref.train_steps, '{:,}', '?')} training steps, "
                f"{_num(ref.train_seconds, '{:.0f}', '?')} s"
                + (f", {ref.train_tokens:,} tokens" if ref.train_tokens else "")
                + "."
            )
    return lines


def method_lines(content: ReportContent) -> list[str]:
    test = TEST_NAMES.get(content.test, content.test)
    k = sum(1 for m in content.records.models if m.kind == "student")
    return [
        "Accuracy intervals are Wilson 95% score intervals over the n test problems.",
        f"A student beats a reference when it is more accurate on the problems both answered and the "
        f"two-sided {test} test gives p < {content.alpha:g}; the smallest such student (by parameters) "
        "is the finding.",
        f"Accuracy differences carry a paired-bootstrap 95% percentile interval ({content.samples:,} "
        "resamples of the problems).",
        f"Each p value is for one comparison; {k} students were tested against each reference, so the "
        "chance that one of them wins by luck is larger than alpha.",
        "Latency is each problem's share of its batch's generation time; peak memory is CUDA's max "
        "allocated on a GPU, the process's max RSS on a CPU (an upper bound).",
    ]


def missing_lines(content: ReportContent) -> list[str]:
    lines = list(content.notes)
    for m in content.records.models:
        lines += [f"{m.name}: {note}" for note in m.missing]
    for t in content.records.teachers:
        lines += [f"teacher {t.name}: {note}" for note in t.missing]
    for f in content.findings:
        lines += [f"{f.reference} vs {name}: not compared ({why})" for name, why in f.skipped.items()]
    for p in content.plots:
        if p.skipped:
            lines.append(f"plot {p.name}: not drawn ({p.skipped})")
    return lines


def stage_rows(records: RunRecords) -> list[list[str]]:
    rows = []
    for stage, entry in records.stages.items():
        if isinstance(entry, dict):
            cost = entry.get("cost")
            rows.append(
                [
                    stage,
                    _num(entry.get("seconds"), "{:.1f}"),
                    _num(cost, "{:.4g}"),
                    str(entry.get("finished", "-")),
                ]
            )
    return rows


# ---- HTML -----------------------------------------------------------------------------------------

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
.meta{color:#666;font-size:.9em}
.finding{background:#f3f8ff;border-left:4px solid #1f77b4;padding:.6em 1em;margin:.6em 0;font-size:1.05em}
.finding.none{background:#fff6f0;border-left-color:#d62728}
table{border-collapse:collapse;font-size:.88em;margin:.5em 0;width:100%}
th,td{border:1px solid #ddd;padding:.3em .5em;text-align:right;vertical-align:top}
th{background:#f5f5f5}td:first-child,th:first-child{text-align:left;white-space:nowrap}
tr.reference td{background:#fff4f4}
figure{margin:1.2em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{color:#555;font-size:.9em}.missing li{color:#8a4b00}
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _html_table(columns, rows, row_classes=None) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{_e(row_classes[i])}"' if row_classes else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _html_list(items: list[str], cls: str = "") -> str:
    attr = f' class="{cls}"' if cls else ""
    return f"<ul{attr}>" + "".join(f"<li>{_e(i)}</li>" for i in items) + "</ul>"


def render_html(content: ReportContent, images: dict[str, bytes]) -> str:
    """index.html; `images` maps a plot name to its PNG bytes (embedded as data URIs)."""
    rec = content.records
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>ScalingDown report: {_e(rec.study_name)}</title><style>{CSS}</style></head><body>",
        f"<h1>ScalingDown report: {_e(rec.study_name)}</h1>",
        f'<p class="meta">Run directory {_e(rec.run_dir)} - generated {_e(content.generated)}</p>',
        '<h2 id="findings">Findings</h2>',
    ]
    if not content.findings:
        parts.append(
            '<p class="finding none">No reference models are configured (report.references), '
            "so there is nothing to beat.</p>"
        )
    for f in content.findings:
        cls = "finding" if f.winner and not f.not_smaller else "finding none"
        parts.append(f'<p class="{cls}">{_e(f.statement())}</p>')
    extra = finding_lines(content)[len(content.findings) :]
    if extra:
        parts.append(_html_list(extra))
    parts.append('<h2 id="models">Models</h2>')
    models = content.records.models
    parts.append(_html_table(MODEL_COLUMNS, [model_cells(m) for m in models], [m.kind for m in models]))
    for section in content.methods:
        parts += [f"<h2>{_e(section.title)}</h2>", _html_table(section.columns, section.rows)]
        parts.append(_html_list(section.notes))
    parts.append('<h2 id="plots">Plots</h2>')
    for plot in content.plots:
        if plot.skipped or plot.name not in images:
            parts.append(f"<p><b>{_e(plot.title)}</b>: not drawn - {_e(plot.skipped or 'no image')}.</p>")
            continue
        data = base64.b64encode(images[plot.name]).decode("ascii")
        parts.append(
            f'<figure id="plot-{_e(plot.name)}">'
            f'<img src="data:image/png;base64,{data}" alt="{_e(plot.title)}">'
            f"<figcaption><b>{_e(plot.title)}.</b> {_e(plot.caption)}</figcaption></figure>"
        )
    parts.append('<h2 id="teachers">Teachers</h2>')
    if rec.teachers:
        parts.append(_html_table(TEACHER_COLUMNS, [teacher_cells(t) for t in rec.teachers]))
    else:
        parts.append("<p>No teachers in this study.</p>")
    stages = stage_rows(rec)
    if stages:
        parts.append('<h2 id="run">Run</h2>')
        parts.append(_html_table(("Stage", "Seconds", "Cost", "Finished"), stages))
    parts.append('<h2 id="method">How to read this</h2>')
    parts.append(_html_list(method_lines(content)))
    parts.append('<h2 id="missing">Missing</h2>')
    missing = missing_lines(content)
    parts.append(_html_list(missing, "missing") if missing else "<p>Nothing is missing.</p>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# ---- Markdown -------------------------------------------------------------------------------------


def _md_cell(text: object) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _md_table(columns, rows) -> list[str]:
    lines = ["| " + " | ".join(_md_cell(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return lines + [""]


def render_markdown(content: ReportContent) -> str:
    """README.md: the same content as index.html, with the plots linked as plots/<name>.png."""
    rec = content.records
    out = [
        f"# ScalingDown report: {rec.study_name}",
        "",
        f"Run directory `{rec.run_dir}` - generated {content.generated}",
        "",
    ]
    out += ["## Findings", ""]
    if not content.findings:
        out += ["No reference models are configured (report.references), so there is nothing to beat.", ""]
    out += [f"- {line}" for line in finding_lines(content)] + [""]
    out += ["## Models", ""] + _md_table(MODEL_COLUMNS, [model_cells(m) for m in rec.models])
    for section in content.methods:
        out += [f"## {section.title}", ""] + _md_table(section.columns, section.rows)
        out += [f"- {line}" for line in section.notes] + [""]
    out += ["## Plots", ""]
    for plot in content.plots:
        if plot.skipped:
            out += [f"**{plot.title}**: not drawn - {plot.skipped}.", ""]
        else:
            out += [f"![{plot.title}](plots/{plot.name}.png)", "", f"*{plot.title}.* {plot.caption}", ""]
    out += ["## Teachers", ""]
    out += (
        _md_table(TEACHER_COLUMNS, [teacher_cells(t) for t in rec.teachers])
        if rec.teachers
        else ["No teachers in this study.", ""]
    )
    stages = stage_rows(rec)
    if stages:
        out += ["## Run", ""] + _md_table(("Stage", "Seconds", "Cost", "Finished"), stages)
    out += ["## How to read this", ""] + [f"- {line}" for line in method_lines(content)] + [""]
    missing = missing_lines(content)
    out += ["## Missing", ""] + ([f"- {line}" for line in missing] if missing else ["Nothing is missing."])
    return "\n".join(out) + "\n"


# ---- CSV ------------------------------------------------------------------------------------------

CSV_COLUMNS = tuple(
    "name kind source parameters accuracy correct n ci_low ci_high strict_accuracy seconds_per_problem "
    "tokens_per_second peak_memory_bytes peak_memory_kind train_seconds train_steps train_tokens final_loss "
    "trainable_parameters teachers student_format combine student_mode teacher_cost teacher_tokens "
    "prompt_format missing".split()
)


def results_rows(records: RunRecords, findings: list[Finding]) -> tuple[list[str], list[dict]]:
    """One row per model with every number, plus its paired comparison against each reference."""
    columns = list(CSV_COLUMNS)
    for f in findings:
        columns += [f"{key}_vs_{f.reference}" for key in ("diff", "diff_ci_low", "diff_ci_high", "p", "n")]
    rows = []
    for m in records.models:
        acc = m.accuracy
        row = {key: getattr(m, key, None) for key in CSV_COLUMNS}
        row.update(
            accuracy=acc.accuracy if acc else None,
            correct=acc.correct if acc else None,
            n=acc.n if acc else None,
            ci_low=acc.ci_low if acc else None,
            ci_high=acc.ci_high if acc else None,
            teachers="+".join(m.teachers) if m.teachers else None,
            missing="; ".join(m.missing) or None,
        )
        for f in findings:
            c = f.comparisons.get(m.name)
            if c is not None:
                values = {
                    "diff": c.diff,
                    "diff_ci_low": c.ci_low,
                    "diff_ci_high": c.ci_high,
                    "p": c.p,
                    "n": c.n,
                }
                row.update({f"{key}_vs_{f.reference}": value for key, value in values.items()})
        rows.append(row)
    return columns, rows


def write_results_csv(path: Path, records: RunRecords, findings: list[Finding]) -> None:
    columns, rows = results_rows(records, findings)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, restval="")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None else v for k, v in row.items()})

"""The report's pages: index.html (self-contained) and README.md (results.csv: `results_csv.py`; the
tables' rows: `tables.py`).

Both pages say the same things in the same order: the findings in plain words, a table of every
model (each accuracy with its n and 95% CI, and beside it a published accuracy with its setting and
source where the config gives one), the plots, the teachers' statistics, the run's stages,
how to read the numbers, and what is missing. index.html embeds its plots as base64 PNG data URIs
and its CSS inline, so it opens from disk with no network; every piece of user text is escaped.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field

from scalingdown.report.collect import RunRecords
from scalingdown.report.finder import AblationPair, Finding, format_count
from scalingdown.report.methods import Section
from scalingdown.report.plots import Plot
from scalingdown.report.tables import (
    TEACHER_COLUMNS,
    break_even_lines,
    cost_table,
    crossover_line,
    fmt_number,
    loss_line,
    model_table,
    teacher_cells,
)


@dataclass
class ReportContent:
    records: RunRecords
    findings: list[Finding]
    pairs: list[AblationPair]
    plots: list[Plot]
    alpha: float
    samples: int
    generated: str
    notes: list[str] = field(default_factory=list)  # report-level problems (e.g. no references)
    losses: list[dict] = field(default_factory=list)  # accuracy lost to quantisation, per rung
    costs: list[dict] = field(default_factory=list)  # report.costs.cost_rows
    methods: list[Section] = field(default_factory=list)  # combination strategies and modes


# ---- numbers as text ------------------------------------------------------------------------------


def finding_lines(content: ReportContent) -> list[str]:
    """The findings, their crossover sizes, the ablation, quantisation, break-even and each reference's
    budget, as sentences."""
    lines = [f.statement() for f in content.findings]
    lines += [line for f in content.findings if (line := crossover_line(f))]
    lines += [p.statement(content.samples) for p in content.pairs]
    lines += [loss_line(loss, content.samples) for loss in content.losses]
    lines += break_even_lines(content)
    for name in dict.fromkeys(f.reference for f in content.findings):  # once per reference, not per scale
        ref = content.records.model(name)
        if ref is not None and (ref.train_seconds or ref.train_steps):
            lines.append(
                f"Budget of {ref.name}: {format_count(ref.parameters)} params, "
                f"{fmt_number(ref.train_steps, '{:,.0f}', '?')} training steps, "
                f"{fmt_number(ref.train_seconds, '{:.0f}', '?')} s"
                + (f", {ref.train_tokens:,.0f} tokens" if ref.train_tokens else "")
                + "."
            )
    return lines


def method_lines(content: ReportContent) -> list[str]:
    published = []
    if any(m.published is not None for m in content.records.models):
        published = [
            "A published accuracy comes from its source's own harness and setting (prompt, shots, answer "
            "extraction), not from this run; on GSM8K harnesses move a model's accuracy by 15-30 points, "
            "so models are compared on the accuracy measured here."
        ]
    return [
        "A single run's accuracy interval is the Wilson 95% score interval over the n test problems; a "
        "student trained with several seeds shows the mean over seeds and problems with a two-level "
        "bootstrap 95% interval (seeds, then problems), and each seed's own accuracy.",
        "Each student is compared with each reference on the problems both answered by a one-sided paired "
        "sign-flip permutation test of the per-problem correctness averaged over seeds (for one seed on "
        "each side: the exact McNemar test); differences carry a paired two-level bootstrap 95% interval "
        f"({content.samples:,} resamples).",
        "The finding is a fixed-sequence test down the ladder, declared before the run: the largest "
        "student is tested first, the next smaller only if the previous one won, and the smallest winner "
        "is the last student that won. With several references (and the ladder in bytes) the sequences "
        f"share the family-wise error rate {content.alpha:g} by Holm's procedure: the chance that the "
        "report names any false winner is at most alpha. Each student's own p value is shown uncorrected "
        "as detail.",
        "The crossover size N* is where a logistic curve in log(parameters), fitted by maximum likelihood "
        "over the ladder and seeds above the task's chance floor, reaches the reference's accuracy; its "
        "interval is a bootstrap over problems and seeds. Outside the ladder's sizes it is an "
        "extrapolation and is labelled so.",
        "Latency (ms/problem) and tokens/s come from a dedicated measurement in a fresh process per model "
        "(a warm-up, then timed passes: the median at batch 1; throughput batched); peak memory is that "
        "process's (CUDA's max allocated on a GPU, max RSS on a CPU, which includes the Python runtime); "
        "Weights are the bytes the weights take as evaluated (int8 rungs: quantised).",
        "Costs use report.price_per_hour and price_per_1k_tokens (device-seconds when both are 0): per "
        "1,000 questions served in batches, per correct answer, and the break-even number of correct "
        "answers after which a student's teachers and training are paid back (paired bootstrap interval).",
        *published,
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
                    fmt_number(entry.get("seconds"), "{:.1f}"),
                    fmt_number(cost, "{:.4g}"),
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
    parts.append(_html_table(*model_table(models), [m.kind for m in models]))
    if content.costs:
        parts.append('<h2 id="costs">Costs</h2>')
        parts.append(_html_table(*cost_table(content)))
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
    out += ["## Models", ""] + _md_table(*model_table(rec.models))
    if content.costs:
        out += ["## Costs", ""] + _md_table(*cost_table(content))
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

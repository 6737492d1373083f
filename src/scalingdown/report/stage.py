"""The report stage: run directory -> report/ (index.html, README.md, results.csv, findings.json, plots/).

    collect (records; missing files noted) -> finder (paired tests, smallest winner per reference)
    -> plots (PNG) -> pages (HTML with embedded plots, Markdown, CSV)

The whole report is built in a temporary directory beside `report/` and swapped in by renames when
complete, so a crash leaves the previous report or the new one, never a mix. `findings.json` holds
the findings and every comparison for programs (e.g. the docs generator).
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from scalingdown.artifacts import atomic_directory, write_json
from scalingdown.config import ReportConfig, StudyConfig
from scalingdown.errors import UserError

REPORT_DIR = "report"


def report_settings(study: StudyConfig) -> ReportConfig:
    """The study's `report` section, or the defaults when the config has none."""
    settings = getattr(study, "report", None)
    return settings if isinstance(settings, ReportConfig) else ReportConfig()


def run_report_stage(study: StudyConfig, *, settings: ReportConfig | None = None) -> Path:
    """Write `<run_dir>/report/` for `study`; returns the path of its index.html.

    `settings` defaults to the study's `report` section. Missing results are marked in the report,
    never fatal; only a run directory that does not exist is a `UserError`.
    """
    from scalingdown.report.collect import collect_run
    from scalingdown.report.costs import cost_rows
    from scalingdown.report.finder import ablation_pairs, find_smallest_winners, quantisation_losses
    from scalingdown.report.methods import method_sections
    from scalingdown.report.pages import ReportContent, render_html, render_markdown
    from scalingdown.report.plots import make_plots
    from scalingdown.report.results_csv import write_results_csv

    settings = settings or report_settings(study)
    run_dir = Path(study.run_dir)
    if not run_dir.is_dir():
        raise UserError("run directory not found: run the study first (`scalingdown run`)", path=run_dir)
    references = list(dict.fromkeys(settings.references))
    records = collect_run(study, references)
    options = {"samples": settings.bootstrap_samples, "seed": study.seed}
    findings = find_smallest_winners(
        records.models,
        references,
        alpha=settings.alpha,
        ladder=settings.ladder,
        floor=chance_floor(run_dir),
        crossover_samples=settings.crossover_samples,
        **options,
    )
    pairs = ablation_pairs(records.models, **options)
    losses = quantisation_losses(records.models, **options)
    costs = cost_rows(
        records.models, references, settings.price_per_hour, settings.price_per_1k_tokens, seed=study.seed
    )
    methods, strategies = method_sections(records.models, alpha=settings.alpha, **options)
    notes = []
    if not references:
        notes.append("no reference models configured (report.references): the finder has nothing to test")
    if not any(m.kind == "student" for m in records.models):
        notes.append("no students in this study")

    out_dir = run_dir / REPORT_DIR
    with atomic_directory(out_dir) as tmp:
        plots = make_plots(records, findings, pairs, tmp / "plots", samples=settings.bootstrap_samples)
        images = {p.name: p.path.read_bytes() for p in plots if p.path is not None}
        for plot in plots:  # the pages name the final location, not the temporary one
            if plot.path is not None:
                plot.path = out_dir / "plots" / plot.path.name
        content = ReportContent(
            records=records,
            findings=findings,
            pairs=pairs,
            plots=plots,
            alpha=settings.alpha,
            samples=settings.bootstrap_samples,
            losses=losses,
            costs=costs,
            generated=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            notes=notes,
            methods=methods,
        )
        (tmp / "index.html").write_text(render_html(content, images), encoding="utf-8")
        (tmp / "README.md").write_text(render_markdown(content), encoding="utf-8")
        write_results_csv(tmp / "results.csv", records, findings)
        write_json(
            tmp / "findings.json",
            json_safe(
                {
                    "study": study.name,
                    "generated": content.generated,
                    "settings": settings.model_dump(mode="json"),
                    "findings": [f.as_dict() for f in findings],
                    "ablation": [{**vars(p), "comparison": p.comparison.as_dict()} for p in pairs],
                    "quantisation": [{**loss, "comparison": loss["comparison"].as_dict()} for loss in losses],
                    "costs": costs,
                    "strategies": [c.as_dict() for c in strategies],
                    "plots": {p.name: p.skipped or f"plots/{p.name}.png" for p in plots},
                }
            ),
        )
    return out_dir / "index.html"


def chance_floor(run_dir: Path) -> float:
    """The accuracy of guessing: 1 / options for multiple choice (0.2 for AQuA-RAT's five), 0 for a
    numeric answer; read from the run's test problems (0 when there are none to read)."""
    from scalingdown.data.schema import read_problems

    path = run_dir / "data" / "test.jsonl"
    try:
        problems = read_problems(path) if path.is_file() else []
    except UserError:
        return 0.0
    sizes = [len(p.options) for p in problems if p.options]
    return 1.0 / (sum(sizes) / len(sizes)) if sizes and len(sizes) == len(problems) else 0.0


def json_safe(value):
    """`value` with every infinite or NaN float as the string "inf", "-inf" or "nan": findings.json
    stays standard JSON (an unbounded interval or a never-reached break-even are real answers)."""
    import math

    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if hasattr(value, "as_dict"):
        return json_safe(value.as_dict())
    return value

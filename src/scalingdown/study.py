"""The `run` orchestration over the stages, and the shared steps the stage commands call.

For now a study is: data -> eval of every configured model. Each step skips what is already done
(the data stage when its report matches the config; a model whose metrics match its settings).
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from scalingdown.artifacts import read_json
from scalingdown.config import StudyConfig
from scalingdown.errors import UserError
from scalingdown.manifest import update_manifest
from scalingdown.study_eval import (  # noqa: F401  (the eval step, re-exported for the CLI and tests)
    EvalTarget,
    eval_key,
    evaluate_models,
    model_path,
    prompt_of,
    score_external,
    student_targets,
)

console = Console(stderr=True, soft_wrap=True)


def default_config_path() -> Path:
    """`configs/demo.yaml`: shipped inside the package, or beside the source in a checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "configs" / "demo.yaml", here.parents[1] / "configs" / "demo.yaml"):
        if candidate.is_file():
            return candidate
    raise UserError("the built-in demo config is missing from this installation (configs/demo.yaml)")


def ensure_data(study: StudyConfig, *, force: bool = False) -> dict:
    """Run the data stage unless `data/` already holds exactly this data config's output (or `force`)."""
    from scalingdown.data.stage import current_report, run_data_stage

    run_dir = Path(study.run_dir)
    report = None if force else current_report(study, run_dir)
    if report is not None:
        console.print(f"[dim]data: done ({report['counts']['train']} train, {report['counts']['test']} test)")
        return report
    started = time.perf_counter()
    report = run_data_stage(study, run_dir)
    update_manifest(run_dir, study, "data", seconds=time.perf_counter() - started, counts=report["counts"])
    console.print(
        f"data: {report['counts']['train']} train, {report['counts']['test']} test -> {run_dir / 'data'}"
    )
    return report


def all_skipped(summaries: dict[str, dict]) -> bool:
    """Whether a stage found every one of its parts already done (nothing was redone)."""
    return bool(summaries) and all(s.get("skipped") for s in summaries.values())


def ensure_teach(study: StudyConfig, *, only: list[str] | None = None) -> dict[str, dict]:
    """The teach stage (every teacher, or those in `only`); cheap to repeat, since every stored answer
    comes from the cache."""
    from scalingdown.teach.stage import run_teach_stage

    started = time.perf_counter()
    summaries = run_teach_stage(study, only=only)
    cost = sum(s.get("usage", {}).get("cost_this_run", 0.0) for s in summaries.values())
    skipped = all_skipped(summaries)
    seconds = time.perf_counter() - started
    update_manifest(Path(study.run_dir), study, "teach", skipped=skipped, seconds=seconds, cost=cost)
    _print_teachers(summaries)
    return summaries


# Why rationales were not verified (teach.verify.CATEGORIES): wrong answer, arithmetic error, no work,
# inconsistent chain, program failed; one column, so the table stays narrow.
_NOT_VERIFIED = ("wrong_answer", "arithmetic_error", "no_work", "inconsistent_chain", "program_failed")


def _print_teachers(summaries: dict[str, dict]) -> None:
    table = Table(title="teachers")
    for column in (
        "teacher",
        "questions",
        "rationales",
        "kept",
        "verified",
        "wrong/arith/work/chain/prog",
        "free acc.",
        "cost",
    ):
        table.add_column(column, justify="left" if column == "teacher" else "right")
    for name, s in summaries.items():
        if "error" in s:
            table.add_row(name, "-", "-", "-", "-", "-", "-", "-")
            console.print(f"[red]teacher {name} failed:[/red] {escape(s['error'])}")
            continue
        free = s.get("free_accuracy")
        table.add_row(
            name,
            str(s["questions"]),
            str(s["rationales"]),
            f"{100 * s['kept_share']:.0f}%",
            f"{100 * s['verified_share']:.0f}%",
            "/".join(str(s.get("categories", {}).get(c, "-")) for c in _NOT_VERIFIED),
            f"{100 * free['accuracy']:.0f}% (n={free['n']})" if free else "-",
            f"{s['usage']['cost']:.4f}",
        )
        failures = s["usage"]["rationales"]["failure_reasons"]
        if failures:
            reason, count = next(iter(failures.items()))
            console.print(f"[yellow]teacher {name}: {count} requests failed: {escape(reason)}")
    console.print(table)


def ensure_students(study: StudyConfig, *, only: list[str] | None = None, force: bool = False) -> dict:
    """The train stage; a student already trained with the same config is skipped."""
    from scalingdown.train.stage import process_state, run_train_stage

    started = time.perf_counter()
    summaries = run_train_stage(study, only=only, force=force)
    if not process_state().is_main_process:  # under torchrun / accelerate launch one process reports
        return summaries
    skipped = all_skipped(summaries)
    update_manifest(
        Path(study.run_dir), study, "train", skipped=skipped, seconds=time.perf_counter() - started
    )
    for name, s in summaries.items():
        if "error" in s:
            console.print(f"[red]student {name} failed:[/red] {escape(s['error'])}")
        elif "skipped" in s:
            console.print(f"[dim]train {name}: done")
        else:
            console.print(
                f"train {name}: {s['steps']} steps, final loss {s['final_loss']:.3f}, "
                f"{s['trainable_parameters']:,} of {s['total_parameters']:,} parameters trained, "
                f"{s['tokens_per_second']:.0f} tokens/s"
            )
    return summaries


def write_report(study: StudyConfig) -> Path:
    """The report stage: findings, tables and plots from everything the run directory holds."""
    from scalingdown.report.stage import run_report_stage

    started = time.perf_counter()
    index = run_report_stage(study)
    update_manifest(Path(study.run_dir), study, "report", seconds=time.perf_counter() - started)
    findings = index.parent / "findings.json"
    if findings.exists():
        for finding in read_json(findings).get("findings", []):
            console.print(escape(finding.get("statement", "")))
    console.print(f"report: {index}")
    return index


def write_findings_doc(study: StudyConfig, report_dir: Path, out: Path) -> Path:
    """The report's Markdown as a documentation page, with its plots copied beside it.

    The page says which command made it: findings are regenerated, never typed in.
    """
    import shutil
    from datetime import datetime, timezone

    plots = out.parent / (out.stem + "_plots")
    shutil.rmtree(plots, ignore_errors=True)
    shutil.copytree(report_dir / "plots", plots)
    body = (report_dir / "README.md").read_text(encoding="utf-8").replace("](plots/", f"]({plots.name}/")
    manifest = Path(study.run_dir) / "manifest.json"
    stages = read_json(manifest).get("stages", {}) if manifest.exists() else {}
    seconds = sum(s.get("seconds", 0.0) for s in stages.values())
    header = (
        "<!-- generated by `scalingdown report --docs`; do not edit: rerun the command -->\n"
        f"_Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by `scalingdown run` + "
        f"`scalingdown report --docs {out}` from the run in `{study.run_dir}` "
        f"(stages took {seconds / 60:.1f} min in all)._\n\n"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, header + body)
    console.print(f"findings page: {out}")
    return out


def write_text_atomic(path: Path, text: str) -> None:
    from scalingdown.artifacts import atomic_open

    with atomic_open(path) as handle:
        handle.write(text)


def teach_failures(summaries: dict[str, dict]) -> list[str]:
    """One line per teacher that failed, or whose requests failed in part."""
    lines = []
    for name, summary in summaries.items():
        if "error" in summary:
            lines.append(f"teacher {name}: {summary['error']}")
            continue
        usage = summary.get("usage", {})
        for part, label in (("rationales", "requests"), ("free_mode", "free-mode requests")):
            record = usage.get(part) or {}
            failed = record.get("failed", 0)
            if failed:
                asked = failed + record.get("answered", 0)
                reason = next(iter(record.get("failure_reasons") or {}), "unknown")
                lines.append(f"teacher {name}: {failed} of {asked} {label} failed (first reason: {reason})")
    return lines


def named_failures(kind: str, results: dict[str, dict]) -> list[str]:
    """One line per student or model whose summary holds an error."""
    return [f"{kind} {name}: {r['error']}" for name, r in results.items() if "error" in r]


def run_study(study: StudyConfig) -> None:
    """data -> teach -> train -> eval (students and models) -> report; each step skips what is done.

    A teacher, student or model that fails does not stop the others; the report is written from
    whatever finished, and then `PartialFailure` names every part that failed (exit code 1).
    """
    from scalingdown.errors import PartialFailure
    from scalingdown.plan import check_plan

    run_dir = Path(study.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    console.rule(f"study {study.name} -> {run_dir}")
    for warning in check_plan(study):
        console.print(f"[yellow]warning: {escape(warning)}")
    failures: list[str] = []
    console.print("stage data")
    ensure_data(study)
    if study.teachers:
        console.print(f"stage teach: {len(study.teachers)} teachers")
        failures += teach_failures(ensure_teach(study))
    if study.students:
        console.print(f"stage train: {len(study.students)} students")
        failures += named_failures("student", ensure_students(study))
    targets = student_targets(study) + [EvalTarget(spec) for spec in study.models]
    if targets:
        console.print(f"stage eval: {len(targets)} models")
        failures += named_failures("model", evaluate_models(study, force=False, targets=targets))
    else:
        console.print("[yellow]no models configured: nothing to evaluate")
    console.print("stage report")
    write_report(study)
    if failures:
        raise PartialFailure(failures)

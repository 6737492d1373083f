"""The `run` orchestration over the stages, and the shared steps the stage commands call.

For now a study is: data -> eval of every configured model. Each step skips what is already done
(the data stage when its report matches the config; a model whose metrics match its settings).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from scalingdown.artifacts import read_json, write_json
from scalingdown.config import ModelConfig, StudyConfig
from scalingdown.errors import UserError
from scalingdown.manifest import update_manifest

console = Console(stderr=True, soft_wrap=True)


def default_config_path() -> Path:
    """`configs/demo.yaml`: shipped inside the package, or beside the source in a checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "configs" / "demo.yaml", here.parents[1] / "configs" / "demo.yaml"):
        if candidate.is_file():
            return candidate
    raise UserError("the built-in demo config is missing from this installation (configs/demo.yaml)")


def _digest(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def data_digest(study: StudyConfig) -> str:
    """What the data stage's output depends on; `data/report.json` records it."""
    return _digest([study.data.model_dump(mode="json"), study.seed])


def ensure_data(study: StudyConfig) -> dict:
    """Run the data stage unless `data/report.json` already matches this data config."""
    from scalingdown.data.stage import run_data_stage

    run_dir = Path(study.run_dir)
    report_path = run_dir / "data" / "report.json"
    key = data_digest(study)
    if report_path.exists():
        report = read_json(report_path)
        if report.get("config_digest") == key:
            console.print(
                f"[dim]data: done ({report['counts']['train']} train, {report['counts']['test']} test)"
            )
            return report
    started = time.perf_counter()
    report = run_data_stage(study, run_dir)
    report["config_digest"] = key
    write_json(report_path, report)
    update_manifest(run_dir, study, "data", seconds=time.perf_counter() - started, counts=report["counts"])
    console.print(
        f"data: {report['counts']['train']} train, {report['counts']['test']} test -> {run_dir / 'data'}"
    )
    return report


def ensure_teach(study: StudyConfig, *, only: list[str] | None = None) -> dict[str, dict]:
    """The teach stage (every teacher, or those in `only`); cheap to repeat, since every stored answer
    comes from the cache."""
    from scalingdown.teach.stage import run_teach_stage

    started = time.perf_counter()
    summaries = run_teach_stage(study, only=only)
    cost = sum(s.get("usage", {}).get("cost_this_run", 0.0) for s in summaries.values())
    update_manifest(Path(study.run_dir), study, "teach", seconds=time.perf_counter() - started, cost=cost)
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
    update_manifest(Path(study.run_dir), study, "train", seconds=time.perf_counter() - started)
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


def student_models(study: StudyConfig) -> list[ModelConfig]:
    """Every trained student as a model to evaluate, prompted the way it was trained."""
    run_dir = Path(study.run_dir)
    return [
        ModelConfig(name=s.name, path=str(run_dir / "students" / s.name), prompt="student")
        for s in study.students
        if (run_dir / "students" / s.name / "scalingdown.json").is_file()
    ]


def model_path(spec: ModelConfig, study: StudyConfig) -> str:
    """Where the model lives: its own path, or a tiny model built (once) inside the run directory."""
    if spec.path is not None:
        return spec.path
    from scalingdown.data.stage import load_run_problems
    from scalingdown.evaluate.prompts import worked_example
    from scalingdown.models.tiny import build_tiny

    train = load_run_problems(Path(study.run_dir), "train")
    texts = [worked_example(p) for p in train]
    out = Path(study.run_dir) / "models" / spec.name
    build_tiny(spec.tiny, texts, out, seed=study.seed, pretrain_texts=texts)
    return str(out)


def evaluate_models(study: StudyConfig, *, force: bool = True) -> dict[str, dict]:
    """Evaluate each configured model on the run's test problems; returns metrics by model name.

    With `force=False` a model whose `metrics.json` already matches its settings is skipped.
    A model that fails to load or generate is reported and the others go on.
    """
    from scalingdown.data.stage import load_run_problems
    from scalingdown.evaluate.stage import evaluate_model

    run_dir = Path(study.run_dir)
    test = load_run_problems(run_dir, "test")
    train = load_run_problems(run_dir, "train") if study.eval.prompt == "few-shot" else []
    results: dict[str, dict] = {}
    for spec in study.models:
        out_dir = run_dir / "eval" / spec.name
        started = time.perf_counter()
        try:
            path = model_path(spec, study)  # a tiny model is built here once, so its state is known
            key = _digest(
                [
                    spec.model_dump(mode="json"),
                    study.eval.model_dump(mode="json"),
                    study.seed,
                    _model_state(path),
                ]
            )
            metrics_path = out_dir / "metrics.json"
            if not force and metrics_path.exists() and read_json(metrics_path).get("spec_digest") == key:
                results[spec.name] = read_json(metrics_path)
                console.print(f"[dim]eval {spec.name}: done")
                continue
            metrics = evaluate_model(
                test,
                name=spec.name,
                model_path=path,
                settings=study.eval,
                out_dir=out_dir,
                prompt_format=spec.prompt,
                train_pool=train,
                seed=study.seed,
            )
        except UserError as exc:
            if len(study.models) == 1:
                raise
            console.print(f"[red]eval {spec.name} failed:[/red] {escape(str(exc))}")
            continue
        metrics["spec_digest"] = key
        write_json(metrics_path, metrics)
        update_manifest(run_dir, study, f"eval/{spec.name}", seconds=time.perf_counter() - started)
        results[spec.name] = metrics
        _print_metrics(spec.name, metrics)
    if len(results) > 1:
        _print_table(results)
    return results


def _model_state(path: str) -> list:
    """What identifies a local model's weights: its records and its weight files' sizes and times,
    so a student trained again is evaluated again. A Hub id has no local state."""
    folder = Path(path)
    if not folder.is_dir():
        return []
    state = []
    for name in ("scalingdown.json", "tiny_build.json", "config.json", "adapter_config.json"):
        if (folder / name).is_file():
            state.append([name, (folder / name).read_text(encoding="utf-8")])
    for weights in sorted(folder.glob("*.safetensors")):
        stat = weights.stat()
        state.append([weights.name, stat.st_size, stat.st_mtime_ns])
    return state


def _print_metrics(name: str, metrics: dict) -> None:
    from scalingdown.evaluate.metrics import Accuracy

    flexible = Accuracy(**metrics["accuracy"])
    strict = Accuracy(**metrics["strict_accuracy"])
    speed = metrics.get("tokens_per_second")
    console.print(
        f"eval {name}: accuracy {flexible} | strict {100 * strict.accuracy:.1f}%"
        + (
            f" | {speed:.0f} tokens/s, {1000 * metrics['seconds_per_problem']:.0f} ms/problem"
            if speed
            else ""
        )
    )


def _print_table(results: dict[str, dict]) -> None:
    table = Table(title="evaluation")
    for column in ("model", "params", "accuracy", "95% CI", "strict", "n", "ms/problem"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for name, m in results.items():
        acc, strict = m["accuracy"], m["strict_accuracy"]
        table.add_row(
            name,
            f"{m.get('num_parameters', 0):,}",
            f"{100 * acc['accuracy']:.1f}%",
            f"{100 * acc['ci_low']:.1f}-{100 * acc['ci_high']:.1f}",
            f"{100 * strict['accuracy']:.1f}%",
            str(m["n"]),
            f"{1000 * m.get('seconds_per_problem', 0):.0f}",
        )
    console.print(table)


def score_external(study: StudyConfig, predictions: Path, *, name: str) -> dict:
    """`scalingdown eval --predictions FILE`: score outputs produced elsewhere."""
    from scalingdown.data.stage import load_run_problems
    from scalingdown.evaluate.stage import score_predictions

    run_dir = Path(study.run_dir)
    test = load_run_problems(run_dir, "test")
    metrics = score_predictions(test, predictions, name=name, out_dir=run_dir / "eval" / name)
    _print_metrics(name, metrics)
    if metrics["missing_problems"]:
        console.print(
            f"[yellow]{metrics['missing_problems']} test problems have no prediction in {predictions}"
        )
    return metrics


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


def run_study(study: StudyConfig) -> None:
    """data -> teach -> train -> eval (students and models); each step skips what is already done."""
    run_dir = Path(study.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    console.rule(f"study {study.name} -> {run_dir}")
    from scalingdown.plan import check_plan

    for warning in check_plan(study):
        console.print(f"[yellow]warning: {escape(warning)}")
    ensure_data(study)
    if study.teachers:
        ensure_teach(study)
    if study.students:
        ensure_students(study)
    models = student_models(study) + list(study.models)
    if not models:
        console.print("[yellow]no models configured: nothing to evaluate")
        return
    evaluate_models(study.model_copy(update={"models": models}), force=False)
    write_report(study)

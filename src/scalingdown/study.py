"""The `run` orchestration over the stages, and the shared steps the stage commands call.

For now a study is: data -> eval of every configured model. Each step skips what is already done
(the data stage when its report matches the config; a model whose metrics match its settings).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from scalingdown.artifacts import read_json, write_json
from scalingdown.config import ModelConfig, StudyConfig
from scalingdown.digests import digest, file_digest, tree_fingerprint
from scalingdown.errors import UserError
from scalingdown.layout import STUDENT_FILE, eval_dir, replicate_label, replicate_seeds, student_dir
from scalingdown.manifest import update_manifest

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


@dataclass
class EvalTarget:
    """One evaluation: a model, and for a student's replicate its training seed (`layout`)."""

    spec: ModelConfig
    seed: int | None = None
    quantize: str | None = None  # a quantised rung of a student: eval/<name>/[seed-<s>/]<kind>/

    @property
    def label(self) -> str:
        label = replicate_label(self.spec.name, self.seed)
        return label if self.quantize is None else f"{label}/{self.quantize}"

    def out_dir(self, run_dir: Path) -> Path:
        folder = eval_dir(run_dir, self.spec.name, self.seed)
        return folder if self.quantize is None else folder / self.quantize


def student_targets(study: StudyConfig) -> list[EvalTarget]:
    """Every trained replicate of every student as a model to evaluate, prompted as it was trained,
    and its quantised rungs (`eval.quantize`, for the seeds in `eval.quantize_seeds`; none for a
    student that is a reference: it is the fixed model to beat)."""
    targets = []
    for student in study.students:
        for seed in replicate_seeds(study, student):
            folder = student_dir(study.run_dir, student.name, seed)
            if (folder / STUDENT_FILE).is_file():
                spec = ModelConfig(name=student.name, path=str(folder), prompt="student")
                targets.append(EvalTarget(spec, seed))
                chosen = study.eval.quantize_seeds
                if student.name in study.report.references:
                    continue  # a reference is the fixed model to beat, evaluated as trained
                if chosen is None or (study.seed if seed is None else seed) in chosen:
                    targets += [EvalTarget(spec, seed, kind) for kind in study.eval.quantize]
    return targets


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


def prompt_of(spec: ModelConfig, study: StudyConfig) -> str:
    """The prompt format a model is evaluated with: its own, else the study's."""
    return spec.prompt or study.eval.prompt


def eval_key(spec: ModelConfig, study: StudyConfig, path: str, quantize: str | None = None) -> str:
    """What an evaluation depends on: the model's spec and weights (a local model's fingerprint),
    the eval settings, the seed, the test set, for a few-shot prompt the train split the exemplars
    come from, and for a student its inference mode (`eval.student_mode`, resolved: 'auto' is the
    mode it names). Any change makes a new key, and the model is evaluated again."""
    from scalingdown.data.stage import split_digests

    splits = split_digests(study.run_dir)
    prompt = prompt_of(spec, study)
    # The mode matters to students only: other models keep the key they had before modes existed.
    # and where the exemplars come from matters to few-shot prompts only.
    settings = study.eval.model_dump(mode="json", exclude={"student_mode", "fewshot_teacher"})
    parts = [
        spec.model_dump(mode="json"),
        settings,
        study.seed,
        path,
        tree_fingerprint(path),
        splits["test"],
        splits["train"] if prompt == "few-shot" else None,
    ]
    if prompt == "few-shot" and study.eval.fewshot_teacher:
        parts.append(fewshot_source_digest(study))
    if quantize is not None:
        parts.append(quantize)
    if prompt == "student" and study.eval.student_mode == "select":
        parts.append(["select", splits.get("dev")])  # the choice follows from the weights and the dev slice
    elif prompt == "student":
        parts.append(student_mode_of(path, study))
    return digest(parts)


def dev_key(study: StudyConfig, path: str) -> str:
    """What a dev-slice evaluation (`evaluate.selection`) depends on: the weights, the decoding
    settings, the seed and the dev slice."""
    from scalingdown.data.stage import split_digests

    settings = study.eval.model_dump(
        mode="json",
        exclude={"student_mode", "fewshot_teacher", "limit", "quantize", "quantize_seeds", "speed_prompts"},
    )
    dev = split_digests(study.run_dir).get("dev")
    return digest([path, tree_fingerprint(path), settings, study.seed, dev])


def select_student_mode(study: StudyConfig, target: EvalTarget, path: str):
    """`eval.student_mode: select`: the mode this replicate is asked in, chosen on the dev slice (once
    per replicate; its quantised rungs reuse the choice), as (test-set plan, selection record)."""
    from scalingdown.data.stage import load_run_problems
    from scalingdown.evaluate.selection import DEV_DIR, select_mode
    from scalingdown.evaluate.stage import student_template
    from scalingdown.evaluate.student_modes import selected_plan

    run_dir = Path(study.run_dir)
    selection = select_mode(
        load_run_problems(run_dir, "dev"),
        name=replicate_label(target.spec.name, target.seed),
        model_path=path,
        settings=study.eval,
        out_dir=eval_dir(run_dir, target.spec.name, target.seed) / DEV_DIR,
        seed=study.seed,
        key=dev_key(study, path),
    )
    return selected_plan(student_template(path), selection["chosen"]), selection


def with_teacher_rationales(train: list, run_dir: Path, teacher: str) -> list:
    """The train problems that `teacher` kept a verified rationale for, each with that rationale (its
    first sample, blank lines collapsed so the exemplar separator stays unambiguous) as its own."""
    from scalingdown.train.examples import load_rationales, rationale_text

    rows = load_rationales(run_dir, [teacher], problems=train, where="eval.fewshot_teacher")[teacher]
    first: dict[str, str] = {}
    for row in sorted(rows, key=lambda r: r.get("sample", 0)):
        first.setdefault(row["problem_id"], rationale_text(row["text"]))
    return [p.model_copy(update={"rationale": first[p.id]}) for p in train if first.get(p.id)]


def fewshot_source_digest(study: StudyConfig) -> str | None:
    """The digest of the file the few-shot exemplars' rationales come from, when a teacher's."""
    name = study.eval.fewshot_teacher
    if not name:
        return None
    from scalingdown.train.examples import RATIONALES_FILE

    path = Path(study.run_dir) / "teachers" / name / RATIONALES_FILE
    return file_digest(path) if path.is_file() else None


def student_mode_of(path: str, study: StudyConfig) -> str:
    """The mode a student at `path` is evaluated in under the study's `eval.student_mode`."""
    from scalingdown.evaluate.stage import student_template
    from scalingdown.evaluate.student_modes import resolve_mode

    return resolve_mode(student_template(path), study.eval.student_mode).mode


def evaluate_models(
    study: StudyConfig, *, force: bool = True, targets: list[EvalTarget] | None = None
) -> dict[str, dict]:
    """Evaluate each target (default: the configured models) on the run's test problems; returns
    metrics by label (`name`, or `name/seed-<s>` for a replicate), and `{"error": reason}` for one
    that failed (the others go on).

    With `force=False` a target whose `metrics.json` holds this evaluation's `eval_key` is skipped.
    """
    from scalingdown.data.stage import load_run_problems
    from scalingdown.evaluate.quantize import QuantisationUnavailable
    from scalingdown.evaluate.stage import evaluate_model

    run_dir = Path(study.run_dir)
    test = load_run_problems(run_dir, "test")
    # Each model's own prompt decides what it needs: a few-shot model takes its exemplars from train.
    targets = [EvalTarget(spec) for spec in study.models] if targets is None else targets
    needs_train = any(prompt_of(t.spec, study) == "few-shot" for t in targets)
    train = load_run_problems(run_dir, "train") if needs_train else []
    if needs_train and study.eval.fewshot_teacher:
        train = with_teacher_rationales(train, run_dir, study.eval.fewshot_teacher)
    results: dict[str, dict] = {}
    for target in targets:
        spec, label, out_dir = target.spec, target.label, target.out_dir(run_dir)
        started = time.perf_counter()
        try:
            path = model_path(spec, study)  # a tiny model is built here once, so its state is known
            key = eval_key(spec, study, path, target.quantize)
            metrics_path = out_dir / "metrics.json"
            if not force and metrics_path.exists() and read_json(metrics_path).get("spec_digest") == key:
                results[label] = read_json(metrics_path)
                console.print(f"[dim]eval {label}: done")
                continue
            plan, selection = None, None
            if prompt_of(spec, study) == "student" and study.eval.student_mode == "select":
                plan, selection = select_student_mode(study, target, path)
            metrics = evaluate_model(
                test,
                name=label,
                model_path=path,
                settings=study.eval,
                out_dir=out_dir,
                prompt_format=prompt_of(spec, study),
                train_pool=train,
                seed=study.seed,
                quantize=target.quantize,
                mode_plan=plan,
            )
            if selection is not None:
                metrics["mode_selection"] = selection
            if study.eval.speed_prompts:
                metrics["speed"] = measure_target_speed(
                    study, path, test, train, prompt_of(spec, study), target, metrics.get("student_mode")
                )
        except QuantisationUnavailable as exc:  # not a failure: this machine cannot run that kind
            console.print(f"[dim]eval {label}: skipped ({exc})")
            write_json(out_dir / "skipped.json", {"reason": str(exc)})
            results[label] = {"skipped": str(exc)}
            continue
        except UserError as exc:
            if len(targets) == 1:
                raise
            console.print(f"[red]eval {label} failed:[/red] {escape(str(exc))}")
            results[label] = {"error": str(exc)}
            continue
        metrics["spec_digest"] = key
        metrics["test_digest"] = file_digest(run_dir / "data" / "test.jsonl")
        if target.seed is not None:
            metrics["training_seed"] = target.seed
        write_json(metrics_path, metrics)
        update_manifest(run_dir, study, f"eval/{label}", seconds=time.perf_counter() - started)
        results[label] = metrics
        _print_metrics(label, metrics)
    done = {name: m for name, m in results.items() if "error" not in m and "skipped" not in m}
    if len(done) > 1:
        _print_table(done)
    return results


def measure_target_speed(study, path, test, train, fmt, target, mode: str | None = None) -> dict:
    """The dedicated speed measurement (`evaluate.speed`) on the first `speed_prompts` test prompts,
    in the format the model was evaluated with, in a fresh process; a student in the mode it was
    evaluated in (a vote: its answer task, the time to one answer of one mode)."""
    from scalingdown.evaluate.speed import SpeedRequest, measure_speed
    from scalingdown.evaluate.stage import build_prompts, student_template
    from scalingdown.evaluate.student_modes import AUTO, VOTE

    problems = test[: study.eval.speed_prompts]
    prompts = build_prompts(
        problems,
        fmt,
        train_pool=train,
        num_fewshot=study.eval.num_fewshot,
        seed=study.seed,
        model_path=path,
        mode=AUTO if mode in (None, VOTE) else mode,
    )
    stop = student_template(path).get("stop", study.eval.stop) if fmt == "student" else study.eval.stop
    request = SpeedRequest(
        model_path=path,
        prompts=prompts,
        max_new_tokens=study.eval.max_new_tokens,
        stop=list(stop),
        device="cpu" if target.quantize == "int8" else study.eval.device,
        dtype="float32" if target.quantize == "int8" else study.eval.dtype,
        quantize=target.quantize,
        passes=study.eval.speed_passes,
    )
    return measure_speed(request)


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
    metrics = score_predictions(
        test,
        predictions,
        name=name,
        out_dir=run_dir / "eval" / name,
        test_digest=file_digest(run_dir / "data" / "test.jsonl"),
    )
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

"""The eval step of a study: what to evaluate, when an evaluation is done, and how a student is asked.

- `student_targets`: every trained replicate of every student, and its quantised rungs;
- `eval_key`: everything an evaluation depends on (weights, settings, seed, test set, for few-shot
  the exemplars' source, for a student its inference mode), so a change reruns it;
- `select_student_mode`: `eval.student_mode: select`, the mode chosen on the dev slice
  (`evaluate.selection`);
- `evaluate_models`: evaluate each target, skipping what is done, one failure not stopping the rest;
  then the dedicated speed measurement (`evaluate.speed`);
- `score_external`: `scalingdown eval --predictions FILE`.
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
                if student.name in study.report.references:
                    continue  # a reference is the fixed model to beat, evaluated as trained
                chosen = study.eval.quantize_seeds
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
    from scalingdown.evaluate.student_modes import resolve_mode

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
    return resolve_mode(student_template(path), selection["chosen"]), selection


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
    # Speed depends on the architecture and the mode, not on a replicate's weights: measured for a
    # student's first seed (and its quantised rungs), shared by the others in the report.
    first_seed = {s.name: replicate_seeds(study, s)[0] for s in study.students}
    results: dict[str, dict] = {}
    for target in targets:
        spec, label, out_dir = target.spec, target.label, target.out_dir(run_dir)
        started = time.perf_counter()
        try:
            path = model_path(spec, study)  # a tiny model is built here once, so its state is known
            key = eval_key(spec, study, path, target.quantize)
            metrics_path = out_dir / "metrics.json"
            done = read_json(metrics_path) if not force and metrics_path.exists() else {}
            if done.get("spec_digest") == key:
                results[label] = done
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
            if study.eval.speed_prompts and target.seed in (None, first_seed.get(spec.name)):
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
    evaluated in (a vote: every mode's prompt, since one voted answer costs them all)."""
    from scalingdown.evaluate.speed import SpeedRequest, measure_speed
    from scalingdown.evaluate.stage import build_prompts, student_template
    from scalingdown.evaluate.student_modes import AUTO

    problems = test[: study.eval.speed_prompts]
    prompts = build_prompts(
        problems,
        fmt,
        train_pool=train,
        num_fewshot=study.eval.num_fewshot,
        seed=study.seed,
        model_path=path,
        mode=mode or AUTO,
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
        prompts_per_question=len(prompts) // len(problems),
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

"""The eval stage: one model on the test problems -> `eval/<name>/{predictions.jsonl,metrics.json}`.

Predictions are appended to `predictions.partial.jsonl` batch by batch, so an interrupted evaluation
resumes where it stopped (when the model and settings are unchanged); the final files are written
atomically only when every problem is answered. `score_predictions` scores outputs produced elsewhere.
A student (prompt 'student') is asked in its `eval.student_mode` (`evaluate.student_modes`); for
'vote' every mode's prompts go through one batched generation, and a problem's row is written once
all its modes are answered.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

from scalingdown.artifacts import iter_jsonl, read_json, write_json, write_jsonl
from scalingdown.config import EvalConfig
from scalingdown.data.answers import majority_vote, score
from scalingdown.data.schema import Problem
from scalingdown.digests import digest, tree_fingerprint
from scalingdown.errors import UserError
from scalingdown.evaluate import prompts as prompt_formats
from scalingdown.evaluate import student_modes
from scalingdown.evaluate.metrics import accuracy
from scalingdown.layout import STUDENT_FILE  # written by `scalingdown train`; holds the prompt format


def student_template(model_path: str | Path) -> dict:
    """The prompt format a student was trained with, from its directory's `scalingdown.json`."""
    path = Path(model_path) / STUDENT_FILE
    if not path.is_file():
        raise UserError(
            f"prompt 'student' needs a model trained by `scalingdown train` (no {STUDENT_FILE} here)",
            path=model_path,
        )
    meta = read_json(path)
    if not isinstance(meta, dict) or "prompt_template" not in meta:
        raise UserError("missing key 'prompt_template'", path=path)
    return meta


def build_prompts(
    problems: Sequence[Problem],
    fmt: str,
    *,
    train_pool: Sequence[Problem] = (),
    num_fewshot: int = 0,
    seed: int = 0,
    model_path: str | Path | None = None,
    mode: str = student_modes.AUTO,
) -> list[str]:
    """Prompts for `problems` in format `fmt` ('zero-shot', 'few-shot' or 'student').

    Few-shot uses one seeded set of exemplars from the train split for every test problem, so all
    problems (and all models) see the same context. A student is asked in `mode`
    (`evaluate.student_modes`) with the prompts it was trained on; for 'vote' that is every mode's
    prompts, mode by mode (prompt j asks problem j % N in the j // N-th mode).
    """
    if fmt == "zero-shot":
        return [prompt_formats.zero_shot(p) for p in problems]
    if fmt == "few-shot":
        shots = prompt_formats.pick_exemplars(train_pool, num_fewshot, seed=seed)
        return [prompt_formats.few_shot(p, shots) for p in problems]
    if fmt == "student":
        if model_path is None:
            raise UserError("prompt 'student' needs a local model directory")
        plan = student_modes.resolve_mode(student_template(model_path), mode)
        return student_modes.mode_prompts(problems, plan)
    raise UserError(f"unknown prompt format {fmt!r}; known: {', '.join(prompt_formats.PROMPT_FORMATS)}")


def score_outputs(problem: Problem, samples: Sequence[str]) -> dict:
    """Strict and flexible answers of one problem; with several samples, the majority vote of each."""
    scored = [score(problem, text) for text in samples]
    strict = majority_vote([s.strict_answer for s in scored])
    flexible = majority_vote([s.flexible_answer for s in scored])
    return student_modes.verdict(problem, flexible, strict)


def prediction_row(problem: Problem, generated: dict, plan: student_modes.ModePlan | None) -> dict:
    """The predictions.jsonl row of one problem from its generations (`generated`: mode -> (prompt,
    Generation), in mode order). A vote row has `prompt` and `output` None and every mode's own
    prompt, output and answers under `modes`; its answers are the vote's."""

    def one(prompt: str, gen) -> dict:
        samples = {"samples": gen.texts} if len(gen.texts) > 1 else {}
        return {"prompt": prompt, "output": gen.texts[0], **samples, **score_outputs(problem, gen.texts)}

    gens = [gen for _, gen in generated.values()]
    if plan is not None and plan.voting:
        per_mode = {mode: one(prompt, gen) for mode, (prompt, gen) in generated.items()}
        head = {"prompt": None, "output": None, **student_modes.vote(problem, per_mode), "modes": per_mode}
    else:
        head = one(*next(iter(generated.values())))
    return {
        "id": problem.id,
        **({"mode": plan.mode} if plan else {}),
        **head,
        "gold": problem.answer,
        "new_tokens": [t for gen in gens for t in gen.new_tokens],
        "seconds": sum(gen.seconds for gen in gens),
        "truncated": any(gen.truncated for gen in gens),
    }


def mode_metrics(rows: Sequence[dict], plan: student_modes.ModePlan, asked: str) -> dict:
    """metrics.json's record of a student's mode: the mode evaluated, what was asked for, and each
    generated mode's own accuracy (strict and flexible, with n and 95% CI) on the same problems."""
    per_mode = {}
    for mode in plan.modes:
        scored = [r["modes"][mode] for r in rows] if plan.voting else rows
        per_mode[mode] = {
            "accuracy": accuracy([r["correct"] for r in scored]).as_dict(),
            "strict_accuracy": accuracy([r["strict_correct"] for r in scored]).as_dict(),
        }
    if plan.voting:
        per_mode[student_modes.VOTE] = {
            "accuracy": accuracy([r["correct"] for r in rows]).as_dict(),
            "strict_accuracy": accuracy([r["strict_correct"] for r in rows]).as_dict(),
        }
    return {"student_mode": plan.mode, "student_mode_asked": asked, "modes": per_mode}


def summarize(rows: Sequence[dict]) -> dict:
    """Accuracy (strict and flexible, with n and 95% CI) and generation totals of prediction rows."""
    tokens = sum(sum(r.get("new_tokens") or [0]) for r in rows)
    seconds = sum(r.get("seconds") or 0.0 for r in rows)
    n = len(rows)
    return {
        "n": n,
        "accuracy": accuracy([r["correct"] for r in rows]).as_dict(),
        "strict_accuracy": accuracy([r["strict_correct"] for r in rows]).as_dict(),
        "generated_tokens": tokens,
        "generated_tokens_per_problem": tokens / n if n else 0.0,
        "generation_seconds": seconds,
        "seconds_per_problem": seconds / n if n else 0.0,
        "tokens_per_second": tokens / seconds if seconds else None,
        "truncated_prompts": sum(bool(r.get("truncated")) for r in rows),
    }


def _fingerprint(
    model_path: str, fmt: str, settings: EvalConfig, prompts: Sequence[str], problems: Sequence[Problem]
) -> str:
    """What a row of an interrupted evaluation was made from: the model (its path and, when local,
    its weights), the format, the settings, the prompts and the problems' gold answers. A row is
    reused only under the same fingerprint, so a retrained model or a changed test set starts over."""
    return digest(
        [
            model_path,
            tree_fingerprint(model_path),
            fmt,
            settings.model_dump(mode="json"),
            list(prompts),
            [[p.id, p.answer, p.options] for p in problems],
        ]
    )


def _resume_rows(partial: Path, fingerprint: str, ids: set[str]) -> dict[str, dict]:
    """Rows of an interrupted run with the same fingerprint; anything else is discarded."""
    if not partial.exists():
        return {}
    rows: dict[str, dict] = {}
    try:
        for _, row in iter_jsonl(partial):
            if row.get("fingerprint") == fingerprint and row.get("id") in ids:
                rows[row["id"]] = row
    except UserError:
        pass  # a line cut by a crash ends what can be reused
    return rows


def evaluate_model(
    problems: Sequence[Problem],
    *,
    name: str,
    model_path: str,
    settings: EvalConfig,
    out_dir: Path,
    prompt_format: str | None = None,
    train_pool: Sequence[Problem] = (),
    seed: int = 0,
    progress: bool = True,
    quantize: str | None = None,
    mode_plan: student_modes.ModePlan | None = None,
) -> dict:
    """Generate, score and write predictions and metrics for one model; returns the metrics.

    `quantize` ('int8', 'int8-bnb', 'nf4'; `evaluate.quantize`) evaluates the model with quantised
    weights; a kind that cannot run here raises `QuantisationUnavailable`. `mode_plan` overrides the
    student's plan resolved from `settings.student_mode` (a mode selected on the dev slice)."""
    from scalingdown.evaluate.efficiency import hardware, package_versions, peak_memory, reset_peak_memory
    from scalingdown.evaluate.generation import DecodingSettings, generate_texts
    from scalingdown.evaluate.quantize import bitsandbytes_config, memory_bytes, quantise_int8
    from scalingdown.models.loading import load_model

    fmt = prompt_format or settings.prompt
    problems = list(problems)[: settings.limit] if settings.limit else list(problems)
    if not problems:
        raise UserError("no test problems to evaluate")
    local = Path(model_path).exists()
    stop, plan = tuple(settings.stop), None
    if fmt == "student":
        meta = student_template(model_path) if local else {}
        if mode_plan is not None:
            plan = mode_plan
        elif local:
            plan = student_modes.resolve_mode(meta, settings.student_mode)
        stop = tuple(meta.get("stop", stop))
    if plan is not None:
        prompts = student_modes.mode_prompts(problems, plan)
    else:
        prompts = build_prompts(
            problems, fmt, train_pool=train_pool, num_fewshot=settings.num_fewshot, seed=seed
        )
    # Prompt j asks problem j % n in mode modes[j // n]; a problem's row is written once all its modes
    # are generated (a plain prompt format is one mode, None).
    modes, n = (list(plan.modes) if plan else [None]), len(problems)
    started = time.perf_counter()
    loaded = load_model(
        model_path,
        device="cpu" if quantize == "int8" else settings.device,
        dtype="float32" if quantize == "int8" else settings.dtype,
        quantization_config=bitsandbytes_config(quantize) if quantize in ("int8-bnb", "nf4") else None,
    )
    quantisation = None
    if quantize == "int8":
        loaded.model, how = quantise_int8(loaded.model)
        quantisation = {"kind": quantize, "implementation": how}
    elif quantize is not None:
        quantisation = {"kind": quantize, "implementation": "bitsandbytes"}
    load_seconds = time.perf_counter() - started
    reset_peak_memory(loaded.device)

    out_dir.mkdir(parents=True, exist_ok=True)
    partial = out_dir / "predictions.partial.jsonl"
    fingerprint = _fingerprint(model_path, fmt, settings, prompts, problems)
    done = _resume_rows(partial, fingerprint, {p.id for p in problems})
    write_jsonl(partial, done.values())  # drop stale or cut lines before appending
    skip = {j for j in range(len(prompts)) if problems[j % n].id in done}
    pending: dict[int, dict] = {}

    decoding = DecodingSettings(
        max_new_tokens=settings.max_new_tokens,
        stop=stop,
        temperature=settings.temperature,
        num_samples=settings.self_consistency,
        batch_size=settings.batch_size,
        seed=seed,
    )
    with partial.open("a", encoding="utf-8") as sink:

        def persist(indices, generations) -> None:
            for j, gen in zip(indices, generations, strict=False):
                i = j % n
                pending.setdefault(i, {})[modes[j // n]] = (prompts[j], gen)
                if len(pending[i]) < len(modes):
                    continue
                problem = problems[i]
                generated = pending.pop(i)  # batches come by length: put the modes back in vote order
                generated = {mode: generated[mode] for mode in modes}
                row = {**prediction_row(problem, generated, plan), "fingerprint": fingerprint}
                done[problem.id] = row
                sink.write(json.dumps(row, ensure_ascii=False) + "\n")
            sink.flush()

        generate_texts(
            loaded,
            prompts,
            decoding,
            on_batch=persist,
            skip=skip,
            progress=progress,
            description=f"eval {name}",
        )

    rows = [{k: v for k, v in done[p.id].items() if k != "fingerprint"} for p in problems]
    metrics = {
        "model": name,
        "model_path": model_path,
        "prompt_format": fmt,
        **summarize(rows),
        **(mode_metrics(rows, plan, settings.student_mode) if plan else {}),
        "num_parameters": loaded.num_parameters,
        "weight_bytes": memory_bytes(loaded.model),
        "quantization": quantisation,
        "peak_memory": peak_memory(loaded.device),
        "dtype": str(loaded.dtype).removeprefix("torch."),
        "load_seconds": load_seconds,
        "resumed_problems": len(skip) // len(modes),
        "settings": {**settings.model_dump(mode="json"), "stop": list(stop)},
        "decoding": asdict(decoding),
        "seed": seed,
        "hardware": hardware(loaded.device),
        "versions": package_versions(),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_jsonl(out_dir / "predictions.jsonl", rows)
    write_json(out_dir / "metrics.json", metrics)
    partial.unlink(missing_ok=True)
    return metrics


def score_predictions(
    problems: Sequence[Problem],
    predictions: Path,
    *,
    name: str,
    out_dir: Path,
    test_digest: str | None = None,
) -> dict:
    """Score outputs produced elsewhere: a JSONL of {"id", "text"} (or "output"), one per problem."""
    by_id = {p.id: p for p in problems}
    rows, seen = [], set()
    for number, obj in iter_jsonl(predictions):
        pid = obj.get("id")
        text = obj.get("text", obj.get("output"))
        if not isinstance(pid, str):
            raise UserError("missing string field 'id'", path=predictions, line=number)
        if not isinstance(text, str):
            raise UserError("missing string field 'text'", path=predictions, line=number)
        if pid not in by_id:
            raise UserError(f"id {pid!r} is not a test problem of this run", path=predictions, line=number)
        if pid in seen:
            raise UserError(f"id {pid!r} appears twice", path=predictions, line=number)
        seen.add(pid)
        problem = by_id[pid]
        rows.append(
            {
                "id": pid,
                "prompt": None,
                "output": text,
                **score_outputs(problem, [text]),
                "gold": problem.answer,
            }
        )
    if not rows:
        raise UserError("no predictions in file", path=predictions)
    metrics = {
        "model": name,
        "predictions_file": str(predictions),
        "test_digest": test_digest,
        **summarize(rows),
        "missing_problems": len(problems) - len(rows),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_jsonl(out_dir / "predictions.jsonl", rows)
    write_json(out_dir / "metrics.json", metrics)
    return metrics

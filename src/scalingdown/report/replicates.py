"""A student as the report sees it: its replicates (one training run per seed) pooled, and its
quantised rungs.

A student trained with `seeds: [0, 1, 2]` has three evaluations, `eval/<name>/seed-<s>/`. Its record
holds every seed's per-problem outcomes (`seed_outcomes`, for the seed-pooled paired tests), every
seed's accuracy (`per_seed`) and, as `accuracy`, the mean over seeds and problems with the
two-level bootstrap interval of `evaluate.replicates.seed_pooled_accuracy` (`pooled` keeps it all,
with a note when one seed means the interval ignores seed noise). A student trained once keeps the
single-run layout and reads as one seed. A quantised rung (`eval/<name>/[seed-<s>/]int8/`) is a
record of its own, `<name>-int8`, pooled the same way; its training figures are its student's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from scalingdown.evaluate.metrics import Accuracy
from scalingdown.evaluate.quantize import KINDS
from scalingdown.layout import eval_dir, seed_folders

FIRST_KNOWN = (
    "source",
    "parameters",
    "prompt_format",
    "trainable_parameters",
    "teachers",
    "student_format",
    "combine",
    "student_mode",
    "weight_bytes",
)
AVERAGED = (
    "train_seconds",
    "train_steps",
    "train_tokens",
    "final_loss",
    "seconds_per_problem",
    "tokens_per_second",
    "tokens_per_problem",
    "peak_memory_bytes",
    "strict_accuracy",
)
POOL_SAMPLES = 4000  # bootstrap replicates of the pooled interval: enough for a 95% percentile CI


def rung_kinds(run_dir: Path, name: str) -> list[str]:
    """The quantisation kinds evaluated for student `name` (any seed)."""
    folder = eval_dir(run_dir, name)
    candidates = [folder] + [path for _, path in seed_folders(folder)]
    return [
        k
        for k in KINDS
        if any((c / k / "metrics.json").is_file() or (c / k / "skipped.json").is_file() for c in candidates)
    ]


def pool_replicates(
    record,
    run_dir: Path,
    test_digest: str | None,
    failures: dict,
    quant: str | None,
    *,
    student: str | None = None,
):
    """Fill `record` (a `collect.ModelRecord`) from the student's evaluation folders: one per seed,
    or the single run's. Returns the record."""
    from scalingdown.artifacts import read_json
    from scalingdown.report.collect import ModelRecord, _read_eval, _read_training

    name = student or record.name
    base = eval_dir(run_dir, name)
    seeds = seed_folders(base) or [(None, base)]
    replicas = []
    for seed, folder in seeds:
        target = folder if quant is None else folder / quant
        one = ModelRecord(name=record.name, kind=record.kind)
        skipped = target / "skipped.json"
        if quant is not None and skipped.is_file() and not (target / "metrics.json").is_file():
            try:
                reason = read_json(skipped).get("reason", "skipped")
            except Exception:  # noqa: BLE001 - an unreadable note is still a skip
                reason = "skipped"
            record.missing.append(f"{quant} not evaluated: {reason}")
            return record
        _read_eval(one, run_dir, test_digest, folder=target)
        _read_training(one, run_dir, failures, seed=seed, name=name)
        replicas.append((seed, one))
    usable = [(seed, one) for seed, one in replicas if one.predictions]
    first = replicas[0][1]
    single = len(seeds) == 1 and seeds[0][0] is None
    for field_name in FIRST_KNOWN:  # the same for every seed: the first one known
        known = [getattr(o, field_name) for _, o in replicas if getattr(o, field_name) is not None]
        setattr(record, field_name, known[0] if known else getattr(first, field_name))
    for field_name in AVERAGED:  # one run: its own figure; replicates: their mean
        values = [getattr(o, field_name) for _, o in replicas if getattr(o, field_name) is not None]
        if single:
            setattr(record, field_name, values[0] if values else None)
        else:
            setattr(record, field_name, float(np.mean(values)) if values else None)
    chosen = [o.student_mode for _, o in replicas if o.student_mode]
    record.mode_selected = any(o.mode_selected for _, o in replicas)
    if len(set(chosen)) > 1:  # modes selected per seed on the dev slice: how often each was chosen
        record.student_mode = ", ".join(f"{mode} x{chosen.count(mode)}" for mode in dict.fromkeys(chosen))
    record.peak_memory_kind = next((o.peak_memory_kind for _, o in replicas if o.peak_memory_kind), None)
    speed = next((o.speed for _, o in replicas if o.speed), None)
    if speed is not None:  # measured once per student: its figures, not a mean with the eval clocks
        record.apply_speed(speed)
    dev = [o.mode_dev_accuracy for _, o in replicas if o.mode_dev_accuracy]
    record.mode_dev_accuracy = {
        mode: float(np.mean([d[mode] for d in dev if mode in d]))
        for mode in dict.fromkeys(m for d in dev for m in d)
    }
    record.mode_accuracy = pooled_modes([o.mode_accuracy for _, o in replicas])
    for seed, one in replicas:
        record.missing += [f"seed {seed}: {m}" if seed is not None else m for m in one.missing]
    if not usable:
        return record
    if single:  # the single-run layout: as before
        record.predictions, record.accuracy = first.predictions, first.accuracy
        return record
    record.seed_outcomes = {seed: {r["id"]: r["correct"] for r in one.predictions} for seed, one in usable}
    record.per_seed = [
        {"seed": seed, "accuracy": one.accuracy.accuracy if one.accuracy else None, "n": len(one.predictions)}
        for seed, one in usable
    ]
    record.accuracy, record.pooled = pooled_accuracy(record.seed_outcomes)
    return record


def pooled_modes(per_seed: list[dict[str, Accuracy]]) -> dict[str, Accuracy]:
    """Each inference mode's accuracy over the seeds that measured it: correct and n summed, so the
    accuracy is the mean over seeds (equal n); its interval is the Wilson interval of that sum (the
    table shows the accuracy only). One seed: its own figures."""
    from scalingdown.evaluate.metrics import accuracy_of

    if len(per_seed) == 1:
        return dict(per_seed[0])
    out = {}
    for mode in dict.fromkeys(m for figures in per_seed for m in figures):
        found = [figures[mode] for figures in per_seed if mode in figures]
        out[mode] = accuracy_of(sum(a.correct for a in found), sum(a.n for a in found))
    return out


def outcome_matrix(outcomes: dict, ids: list[str]) -> np.ndarray:
    """(seeds, len(ids)) bool array of `outcomes` (seed -> {id: correct}) on `ids`."""
    return np.array([[by_id[i] for i in ids] for by_id in outcomes.values()], dtype=bool)


def pooled_accuracy(outcomes: dict) -> tuple[Accuracy, dict]:
    """The mean over seeds on the problems every seed answered, as an `Accuracy` whose interval is
    the two-level bootstrap one, and the full `PooledAccuracy` record."""
    from scalingdown.evaluate.replicates import seed_pooled_accuracy

    ids = sorted(set.intersection(*(set(by_id) for by_id in outcomes.values())))
    matrix = outcome_matrix(outcomes, ids)
    pooled = seed_pooled_accuracy(matrix, samples=POOL_SAMPLES, seed=0)
    n = len(ids)
    result = Accuracy(
        accuracy=pooled.mean,
        correct=round(pooled.mean * n),
        n=n,
        ci_low=pooled.ci_low,
        ci_high=pooled.ci_high,
    )
    return result, {**pooled.as_dict(), "seeds_list": [s for s in outcomes]}

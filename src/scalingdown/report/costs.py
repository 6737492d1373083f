"""What an answer costs: per 1,000 questions, per correct answer, and when a student pays for itself.

Prices come from the report config: `price_per_hour` for a device-hour (serving and training) and
`price_per_1k_tokens` for generated tokens; with both at 0 the figures are device-seconds and tokens
instead of money (the unit column says which).

- serving cost per question: the seconds one question takes when questions are served in batches
  (1 / the measured batched throughput of `evaluate.speed`, else the evaluation's own seconds per
  problem) x price per hour / 3600, plus its generated tokens x price per 1,000 tokens / 1000;
- cost per correct answer: that / accuracy (what a correct answer costs when wrong ones are paid too);
- one-off cost of a student: its teachers' rationales (teach-stage usage) plus its training time at
  the device-hour price;
- break-even against a reference: the number of correctly answered questions after which the
  student's one-off cost is paid back by its cheaper correct answers,
  Q* = one-off / (cost per correct of the reference - cost per correct of the student); infinite when
  the student's correct answers are not cheaper. Its interval is a paired bootstrap over problems
  (and seeds): both accuracies are recomputed on each resample, the timings held at their medians.
"""

from __future__ import annotations

import math

import numpy as np

from scalingdown.report.collect import ModelRecord
from scalingdown.report.replicates import outcome_matrix

BREAK_EVEN_SAMPLES = 2000


def seconds_per_question(record: ModelRecord) -> float | None:
    speed = record.speed or {}
    throughput = speed.get("questions_per_second_batched")
    if throughput:
        return 1.0 / throughput
    return record.seconds_per_problem


def serving_cost(record: ModelRecord, price_per_hour: float, price_per_1k_tokens: float) -> float | None:
    """Cost of answering one question (device-seconds when no price is set)."""
    seconds = seconds_per_question(record)
    if seconds is None:
        return None
    if price_per_hour == 0 and price_per_1k_tokens == 0:
        return seconds
    tokens = record.tokens_per_problem or 0.0
    return seconds * price_per_hour / 3600 + tokens * price_per_1k_tokens / 1000


def one_off_cost(record: ModelRecord, price_per_hour: float, price_per_1k_tokens: float) -> float | None:
    """Teachers' rationales plus training time (device-seconds of training when no price is set)."""
    if record.train_seconds is None:
        return None
    if price_per_hour == 0 and price_per_1k_tokens == 0:
        return record.train_seconds
    return (record.teacher_cost or 0.0) + record.train_seconds * price_per_hour / 3600


def break_even(
    student: ModelRecord,
    reference: ModelRecord,
    one_off: float,
    s_cost: float,
    r_cost: float,
    *,
    seed: int = 0,
) -> dict:
    """Q* (correct answers) with its paired-bootstrap 95% interval; inf when it never pays back."""
    s_out, r_out = student.outcomes(), reference.outcomes()
    ids = sorted(set.intersection(*(set(x) for x in [*s_out.values(), *r_out.values()])))
    if not ids:
        return {"value": None, "ci_low": None, "ci_high": None}
    s, r = outcome_matrix(s_out, ids).mean(axis=0), outcome_matrix(r_out, ids).mean(axis=0)

    def q_star(acc_s, acc_r):
        acc_s, acc_r = np.asarray(acc_s, dtype=float), np.asarray(acc_r, dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            saving = r_cost / acc_r - s_cost / acc_s
            value = np.where((acc_s > 0) & (acc_r > 0) & (saving > 0), one_off / saving, np.inf)
        return value

    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(ids), size=(BREAK_EVEN_SAMPLES, len(ids)))
    values = q_star(s[draws].mean(axis=1), r[draws].mean(axis=1))
    low, high = np.quantile(values, [0.025, 0.975], method="inverted_cdf")  # no interpolation with inf
    point = float(q_star(s.mean(), r.mean()))
    return {"value": point, "ci_low": float(low), "ci_high": float(high)}


def cost_rows(
    models: list[ModelRecord],
    references: list[str],
    price_per_hour: float,
    price_per_1k_tokens: float,
    *,
    seed: int = 0,
) -> list[dict]:
    """One row per evaluated model: cost per 1,000 questions and per correct answer; for a student,
    its one-off cost and its break-even against each reference."""
    priced = price_per_hour > 0 or price_per_1k_tokens > 0
    unit = "price units" if priced else "device-seconds"
    by_name = {m.name: m for m in models}
    rows = []
    for m in models:
        cost = serving_cost(m, price_per_hour, price_per_1k_tokens)
        if cost is None or m.accuracy is None:
            continue
        row = {
            "model": m.name,
            "unit": unit,
            "per_1000_questions": 1000 * cost,
            "per_correct": cost / m.accuracy.accuracy if m.accuracy.accuracy > 0 else math.inf,
            "one_off": None,
            "break_even": {},
        }
        one_off = one_off_cost(m, price_per_hour, price_per_1k_tokens) if m.kind == "student" else None
        row["one_off"] = one_off
        for name in references:
            ref = by_name.get(name)
            if one_off is None or ref is None or ref is m or not m.comparable or not ref.comparable:
                continue
            r_cost = serving_cost(ref, price_per_hour, price_per_1k_tokens)
            if r_cost is not None:
                row["break_even"][name] = break_even(m, ref, one_off, cost, r_cost, seed=seed)
        rows.append(row)
    return rows


def format_amount(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if math.isinf(value):
        return "never"
    return f"{value:,.3g} s" if unit == "device-seconds" else f"{value:,.4g}"

"""results.csv: one row per model with every figure the report shows, for a spreadsheet or pandas."""

from __future__ import annotations

import csv
from pathlib import Path

from scalingdown.report.collect import RunRecords
from scalingdown.report.finder import Finding

CSV_COLUMNS = tuple(
    "name kind source parameters accuracy correct n ci_low ci_high strict_accuracy seconds_per_problem "
    "tokens_per_second peak_memory_bytes peak_memory_kind train_seconds train_steps train_tokens final_loss "
    "trainable_parameters teachers student_format combine student_mode teacher_cost teacher_tokens "
    "prompt_format weight_bytes quantized_from quantization seeds per_seed_accuracy published_accuracy "
    "published_setting published_source missing".split()
)


def _suffix(f: Finding) -> str:
    return f.reference if f.scale == "parameters" else f"{f.reference}_bytes"


def results_rows(records: RunRecords, findings: list[Finding]) -> tuple[list[str], list[dict]]:
    """One row per model with every number, plus its paired comparison against each reference."""
    columns = list(CSV_COLUMNS)
    for f in findings:
        columns += [f"{key}_vs_{_suffix(f)}" for key in ("diff", "diff_ci_low", "diff_ci_high", "p", "n")]
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
            seeds=len(m.per_seed) or 1,
            per_seed_accuracy=" ".join(f"{x['accuracy']:.4f}" for x in m.per_seed) or None,
            missing="; ".join(m.missing) or None,
        )
        if m.published is not None:  # a fraction, as `accuracy` is; the config gives percent
            row.update(
                published_accuracy=m.published.value / 100,
                published_setting=m.published.setting,
                published_source=m.published.source,
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
                row.update({f"{key}_vs_{_suffix(f)}": value for key, value in values.items()})
        rows.append(row)
    return columns, rows


def write_results_csv(path: Path, records: RunRecords, findings: list[Finding]) -> None:
    columns, rows = results_rows(records, findings)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, restval="")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None else v for k, v in row.items()})

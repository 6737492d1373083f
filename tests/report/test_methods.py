"""The report's method tables: each student's combination strategy and modes, and every strategy at
one size against the TinyLLM student, with outcomes chosen so the paired tests are known."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scalingdown.artifacts import write_json, write_jsonl
from scalingdown.config import ReportConfig, StudentConfig, StudyConfig, TinyModelConfig
from scalingdown.evaluate.metrics import accuracy
from scalingdown.evaluate.paired import mcnemar_exact
from scalingdown.evaluate.stage import summarize
from scalingdown.report.collect import ModelRecord
from scalingdown.report.methods import strategy_comparisons
from scalingdown.report.stage import run_report_stage

N = 100
IDS = [f"test-{i:03d}" for i in range(N)]
# name: (parameters, combine, teachers, problems right); the TinyLLM student gets 0..59 right.
STUDENTS = {
    "tinyllm": (1000, "tasks", ["a", "b"], set(range(60))),
    "pooled": (1000, "pool", ["a", "b"], set(range(40))),  # b=0, c=20
    "one-teacher": (1000, "tasks", ["a"], set(range(50)) | set(range(60, 75))),  # b=15, c=10
    "routed": (1000, "route", ["a", "b"], set(range(60)) | set(range(60, 70))),  # b=10, c=0
    "bigger": (5000, "pool", ["a", "b"], set(range(90))),  # no TinyLLM student at its size
}


def _record(name: str) -> ModelRecord:
    parameters, combine, teachers, right = STUDENTS[name]
    outcomes = [{"id": pid, "correct": i in right} for i, pid in enumerate(IDS)]
    return ModelRecord(
        name=name,
        kind="student",
        parameters=parameters,
        accuracy=accuracy([o["correct"] for o in outcomes]),
        teachers=teachers,
        combine=combine,
        predictions=outcomes,
    )


def test_every_strategy_is_compared_with_the_tinyllm_student_of_its_size():
    comparisons = strategy_comparisons([_record(n) for n in STUDENTS], samples=4000)
    found = {c.student: c for c in comparisons}
    assert set(found) == {"pooled", "one-teacher", "routed"}  # 'bigger' has no baseline at its size
    assert all(c.baseline == "tinyllm" and c.parameters == 1000 for c in comparisons)
    assert found["pooled"].comparison.diff == pytest.approx(-0.2)
    # one seed on each side: the sign-flip test is McNemar's on the discordant pairs, here sampled
    # (20 and 25 discordant problems): at its floor for 0 vs 20, near the exact value for 15 vs 10
    assert found["pooled"].comparison.p == pytest.approx(1 / 4001)
    assert found["one-teacher"].comparison.p == pytest.approx(mcnemar_exact(15, 10), abs=0.04)
    assert found["one-teacher"].comparison.diff == pytest.approx(0.05)
    assert found["routed"].comparison.diff == pytest.approx(0.1)
    # Holm over the three: smallest p times 3, then times 2, then times 1 (monotone)
    ps = sorted((c.comparison.p, name) for name, c in found.items())
    assert found[ps[0][1]].adjusted_p == pytest.approx(min(1, 3 * ps[0][0]))
    assert found[ps[1][1]].adjusted_p == pytest.approx(min(1, max(3 * ps[0][0], 2 * ps[1][0])))
    assert found["pooled"].different and not found["one-teacher"].different


def test_the_baseline_is_the_tasks_student_with_the_most_teachers():
    records = [_record(n) for n in ("one-teacher", "pooled", "tinyllm")]
    assert {c.baseline for c in strategy_comparisons(records, samples=200)} == {"tinyllm"}
    alone = [_record(n) for n in ("pooled", "routed")]  # no 'tasks' student: nothing to compare with
    assert strategy_comparisons(alone, samples=200) == []


def _fake_run(run_dir: Path) -> StudyConfig:
    for name, (parameters, combine, teachers, right) in STUDENTS.items():
        rows = [{"id": pid, "correct": i in right, "strict_correct": i in right} for i, pid in enumerate(IDS)]
        mode = "single" if combine == "pool" else "answer"
        modes = {mode: {"accuracy": accuracy([r["correct"] for r in rows]).as_dict()}}
        if name == "routed":  # evaluated by vote: every mode's own figure is in metrics.json
            modes = {
                "answer": {"accuracy": accuracy([i < 55 for i in range(N)]).as_dict()},
                "rationale:a": {"accuracy": accuracy([i < 65 for i in range(N)]).as_dict()},
                "vote": {"accuracy": accuracy([r["correct"] for r in rows]).as_dict()},
            }
        metrics = {
            "model": name,
            **summarize(rows),
            "num_parameters": parameters,
            "student_mode": "vote" if name == "routed" else mode,
            "modes": modes,
        }
        write_jsonl(run_dir / "eval" / name / "predictions.jsonl", rows)
        write_json(run_dir / "eval" / name / "metrics.json", metrics)
        meta = {"teachers": teachers, "combine": {"strategy": combine}, "total_parameters": parameters}
        write_json(run_dir / "students" / name / "scalingdown.json", meta)
    tiny = TinyModelConfig()
    return StudyConfig(run_dir=str(run_dir), students=[StudentConfig(name=n, tiny=tiny) for n in STUDENTS])


def test_the_report_shows_each_mode_evaluated_and_the_strategy_table(tmp_path):
    study = _fake_run(tmp_path / "run")
    index = run_report_stage(study, settings=ReportConfig(bootstrap_samples=200))
    readme = (index.parent / "README.md").read_text(encoding="utf-8")
    routed = next(line for line in readme.splitlines() if line.startswith("| routed | 1K | route"))
    assert "| vote | 70.0% | answer 55.0%, rationale:a 65.0%, vote 70.0% |" in routed
    assert "## Combination strategies at one size" in readme and "3 comparisons" in readme
    pooled = next(line for line in readme.splitlines() if line.startswith("| 1K | pooled | pool"))
    assert "| tinyllm | -20.0 points" in pooled and "| single |" in pooled
    findings = json.loads((index.parent / "findings.json").read_text())
    assert {s["student"] for s in findings["strategies"]} == {"pooled", "one-teacher", "routed"}
    html = index.read_text(encoding="utf-8")
    assert "Combination strategies at one size" in html and "rationale:a 65.0%" in html


def test_modes_selected_per_seed_show_how_often_each_was_chosen_and_the_dev_accuracies(tmp_path):
    run_dir = tmp_path / "run"
    chosen = {0: "answer", 1: "vote", 2: "answer"}
    dev = {
        0: {"answer": 0.5, "rationale:a": 0.3, "vote": 0.4},
        1: {"answer": 0.3, "rationale:a": 0.2, "vote": 0.6},
    }
    dev[2] = {"answer": 0.7, "rationale:a": 0.4, "vote": 0.5}
    for seed, mode in chosen.items():
        rows = [{"id": pid, "correct": i < 40 + seed, "strict_correct": i < 40} for i, pid in enumerate(IDS)]
        metrics = {
            "model": f"s/seed-{seed}",
            **summarize(rows),
            "num_parameters": 1000,
            "student_mode": mode,
            "student_mode_asked": "select",
            "mode_selection": {"chosen": mode, "dev_n": 50, "dev_accuracy": dev[seed]},
            "modes": {mode: {"accuracy": accuracy([r["correct"] for r in rows]).as_dict()}},
            "seconds_per_problem": 9.0,  # the evaluation's own clock, on every seed
        }
        if seed == 0:  # the speed measurement: once per student
            metrics["speed"] = {"seconds_per_question": 0.25, "tokens_per_second_batched": 400.0}
        write_jsonl(run_dir / "eval" / "s" / f"seed-{seed}" / "predictions.jsonl", rows)
        write_json(run_dir / "eval" / "s" / f"seed-{seed}" / "metrics.json", metrics)
        meta = {"teachers": ["a"], "combine": {"strategy": "tasks"}, "total_parameters": 1000}
        write_json(run_dir / "students" / "s" / f"seed-{seed}" / "scalingdown.json", meta)
    study = StudyConfig(
        run_dir=str(run_dir), seeds=[0, 1, 2], students=[StudentConfig(name="s", tiny=TinyModelConfig())]
    )
    index = run_report_stage(study, settings=ReportConfig(bootstrap_samples=200))
    readme = (index.parent / "README.md").read_text(encoding="utf-8")
    line = next(row for row in readme.splitlines() if row.startswith("| s | 1K | tasks"))
    assert "| select: answer x2, vote x1 | 41.0% |" in line
    assert "dev: answer 50.0%, rationale:a 30.0%, vote 50.0%" in line  # means over the three seeds
    assert "chosen per seed on the dev slice" in readme
    results = (index.parent / "results.csv").read_text(encoding="utf-8").splitlines()
    header, row = results[0].split(","), next(r for r in results if r.startswith("s,")).split(",")
    assert float(row[header.index("seconds_per_problem")]) == 0.25  # the measurement, not a mean of clocks

"""`scalingdown run` end to end on a small study: a failing student does not stop the others, and
the report marks what is missing instead of failing."""

from __future__ import annotations

import json
from pathlib import Path

from scalingdown.artifacts import read_json
from scalingdown.config import parse_config
from scalingdown.data.synthetic import generate_splits
from scalingdown.evaluate.prompts import worked_solution
from scalingdown.study import run_study

TINY = {
    "arch": "llama",
    "hidden_size": 32,
    "num_layers": 2,
    "num_heads": 2,
    "vocab_size": 320,
    "max_positions": 256,
}


def test_a_failing_student_is_reported_and_the_study_goes_on(tmp_path: Path) -> None:
    data = {
        "dataset": "synthetic",
        "synthetic": {"n_train": 120, "n_test": 30, "max_steps": 1, "max_value": 9},
    }
    study_dict = {
        "name": "mini",
        "run_dir": str(tmp_path / "run"),
        "data": data,
        "teachers": [
            {"name": "book", "backend": "replay", "model": str(tmp_path / "book.jsonl"), "num_examples": 0}
        ],
        "teach": {"free_eval_problems": 0},
        "hyperparameters": {
            "max_steps": 6,
            "batch_size": 16,
            "log_every": 3,
            "checkpoint_every": 6,
            "mixed_precision": "no",
            "max_length": 128,
        },
        "students": [
            {"name": "ok", "tiny": TINY, "method": "full", "format": "single"},
            {"name": "broken", "tiny": TINY, "method": "lora", "lora": {"target_modules": ["no_such_proj"]}},
            {"name": "reference", "tiny": {**TINY, "hidden_size": 64}, "method": "full", "teachers": []},
        ],
        "report": {"references": ["reference", "not-in-study"]},
        "eval": {"max_new_tokens": 24, "batch_size": 32},
    }
    study = parse_config(study_dict)
    train, _ = generate_splits(study.data.synthetic, study.seed)
    # A recorded teacher that shows its work, but not always: the verdict categories count it.
    texts = [worked_solution(p) for p in train]
    for i in range(0, 20, 2):
        texts[i] = f"The answer is {train[i].answer}."  # the gold answer alone: no work
    (tmp_path / "book.jsonl").write_text(
        "".join(json.dumps({"id": p.id, "text": text}) + "\n" for p, text in zip(train, texts, strict=True))
    )
    run_study(study)
    run = tmp_path / "run"
    stats = read_json(run / "teachers" / "book" / "stats.json")
    assert stats["categories"]["no_work"] == 10 and stats["categories"]["verified"] == 110 == stats["kept"]
    assert "No work" in (run / "report" / "README.md").read_text()  # the teacher table says so too
    summary = read_json(run / "students" / "summary.json")
    assert "no_such_proj" in summary["broken"]["error"]
    assert summary["ok"]["steps"] == 6 and summary["reference"]["steps"] == 6
    for name in ("ok", "reference"):
        assert read_json(run / "eval" / name / "metrics.json")["n"] == 30
    assert not (run / "eval" / "broken").exists()
    page = (run / "report" / "README.md").read_text()
    assert "broken" in page and "no_such_proj" in page  # marked, with its reason
    assert "not-in-study" in page
    findings = read_json(run / "report" / "findings.json")["findings"]
    assert {f["reference"] for f in findings} >= {"reference"}
    manifest = read_json(run / "manifest.json")
    assert {"data", "teach", "train", "report"} <= set(manifest["stages"])


def test_a_retrained_model_is_evaluated_again(tmp_path: Path) -> None:
    """The eval step skips a model only while its weights are the ones it measured."""
    from scalingdown.study import ensure_data, evaluate_models

    study = parse_config(
        {
            "run_dir": str(tmp_path / "run"),
            "data": {"dataset": "synthetic", "synthetic": {"n_train": 60, "n_test": 8}},
            "eval": {"max_new_tokens": 4, "batch_size": 8},
            "models": [{"name": "m", "tiny": TINY}],
        }
    )
    ensure_data(study)
    metrics = tmp_path / "run" / "eval" / "m" / "metrics.json"
    first = evaluate_models(study, force=False)["m"]
    written = metrics.stat().st_mtime_ns
    evaluate_models(study, force=False)
    assert metrics.stat().st_mtime_ns == written  # skipped: same weights, same settings
    model_dir = tmp_path / "run" / "models" / "m"
    record = model_dir / "tiny_build.json"
    record.write_text(record.read_text().replace('"build_seconds"', '"note": "rebuilt", "build_seconds"'))
    rerun = evaluate_models(study, force=False)["m"]
    assert rerun["spec_digest"] != first["spec_digest"] and metrics.stat().st_mtime_ns != written

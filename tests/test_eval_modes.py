"""Student inference modes through the eval step and the command: the mode is part of what an
evaluation is 'done' for, and `scalingdown eval --mode` evaluates the mode it names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scalingdown.artifacts import read_json, read_jsonl
from scalingdown.config_file import parse_config
from scalingdown.train.examples import student_prompt_record
from tests.test_cli import run_cli

TINY = {"arch": "llama", "hidden_size": 32, "num_layers": 2, "num_heads": 2, "vocab_size": 320}
MODES = ["answer", "rationale:careful", "rationale:chatty"]


@pytest.fixture
def run_with_student(tmp_path: Path) -> tuple[Path, Path]:
    """A run directory with data, and an (untrained) tiny model saved as a two-teacher student."""
    from scalingdown.config import TinyModelConfig
    from scalingdown.data.stage import load_run_problems
    from scalingdown.evaluate.prompts import worked_example
    from scalingdown.models.tiny import build_tiny
    from scalingdown.study import ensure_data

    run = tmp_path / "run"
    ensure_data(parse_config({"run_dir": str(run), "data": {"synthetic": {"n_train": 60, "n_test": 6}}}))
    texts = [worked_example(p) for p in load_run_problems(run, "train")]
    student = build_tiny(TinyModelConfig(**TINY), texts, tmp_path / "student", seed=0, progress=False)
    (student / "scalingdown.json").write_text(json.dumps(student_prompt_record("multitask", MODES)))
    return run, student


def _study(run: Path, student: Path, mode: str):
    return parse_config(
        {
            "run_dir": str(run),
            "data": {"synthetic": {"n_train": 60, "n_test": 6}},
            "eval": {
                "max_new_tokens": 4,
                "batch_size": 8,
                "student_mode": mode,
                "speed_prompts": 0,
                "quantize": [],
            },
            "models": [
                {"name": "s", "path": str(student), "prompt": "student"},
                {"name": "ref", "tiny": TINY},
            ],
        }
    )


def test_another_mode_evaluates_the_student_again_and_nothing_else(run_with_student):
    from scalingdown.study import evaluate_models

    run, student = run_with_student
    first = evaluate_models(_study(run, student, "answer"), force=False)
    assert first["s"]["student_mode"] == "answer" and "student_mode" not in first["ref"]
    ref_written = (run / "eval" / "ref" / "metrics.json").stat().st_mtime_ns
    # 'auto' is 'answer' for this student: the same evaluation, skipped.
    same = evaluate_models(_study(run, student, "auto"), force=False)
    assert same["s"]["spec_digest"] == first["s"]["spec_digest"]
    voted = evaluate_models(_study(run, student, "vote"), force=False)
    assert voted["s"]["spec_digest"] != first["s"]["spec_digest"]
    assert voted["s"]["student_mode"] == "vote" and list(voted["s"]["modes"]) == [*MODES, "vote"]
    assert (run / "eval" / "ref" / "metrics.json").stat().st_mtime_ns == ref_written  # not a student
    assert voted["ref"]["spec_digest"] == first["ref"]["spec_digest"]
    rows = read_jsonl(run / "eval" / "s" / "predictions.jsonl")
    assert all(list(r["modes"]) == MODES for r in rows)


def test_a_mode_the_student_lacks_fails_that_student_only(run_with_student):
    from scalingdown.study import evaluate_models

    run, student = run_with_student
    results = evaluate_models(_study(run, student, "rationale:nobody"), force=False)
    assert "eval.student_mode: 'rationale:nobody' is not a mode of this student" in results["s"]["error"]
    assert "error" not in results["ref"]


def test_eval_mode_on_the_command_line(run_with_student):
    run, student = run_with_student
    args = ["eval", "--run-dir", str(run), "--model", str(student), "--name", "s", "--prompt", "student"]
    done = run_cli(*args, "--mode", "rationale:chatty", "--max-new-tokens", "4")
    assert done.returncode == 0, done.stderr
    metrics = read_json(run / "eval" / "s" / "metrics.json")
    assert (
        metrics["student_mode"] == "rationale:chatty"
        and metrics["settings"]["student_mode"] == "rationale:chatty"
    )
    bad = run_cli(*args, "--mode", "rationale")
    assert bad.returncode == 2 and "eval.student_mode: 'rationale': expected" in bad.stderr
    assert bad.stderr.strip().count("\n") == 0

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


def _select_study(run: Path, student: Path, dev_size: int = 12):
    return parse_config(
        {
            "run_dir": str(run),
            "data": {"synthetic": {"n_train": 60, "n_test": 6}, "dev_size": dev_size},
            "eval": {
                "max_new_tokens": 6,
                "batch_size": 8,
                "student_mode": "select",
                "speed_prompts": 0,
                "quantize": [],
            },
            "models": [{"name": "s", "path": str(student), "prompt": "student"}],
        }
    )


def test_select_chooses_the_mode_on_the_dev_slice_and_answers_the_test_set_with_it(tmp_path: Path):
    from scalingdown.config import TinyModelConfig
    from scalingdown.data.stage import load_run_problems
    from scalingdown.evaluate.prompts import from_template, worked_example
    from scalingdown.evaluate.student_modes import choose, selection_order
    from scalingdown.models.tiny import build_tiny
    from scalingdown.study import ensure_data, evaluate_models

    run = tmp_path / "run"
    ensure_data(_select_study(run, tmp_path / "student"))
    texts = [worked_example(p) for p in load_run_problems(run, "train")]
    config = TinyModelConfig(**{**TINY, "pretrain_steps": 30})
    student = build_tiny(config, texts, tmp_path / "student", seed=0, progress=False)
    (student / "scalingdown.json").write_text(json.dumps(student_prompt_record("multitask", MODES)))

    metrics = evaluate_models(_select_study(run, student), force=False)["s"]
    dev_dir = run / "eval" / "s" / "dev"
    dev_rows = read_jsonl(dev_dir / "predictions.jsonl")
    dev_ids = {p.id for p in load_run_problems(run, "dev")}
    assert {r["id"] for r in dev_rows} == dev_ids and len(dev_ids) == 12  # the dev slice, not test
    # The rule, recomputed from the dev predictions themselves.
    dev_accuracy = {mode: sum(r["modes"][mode]["correct"] for r in dev_rows) / 12 for mode in MODES}
    dev_accuracy["vote"] = sum(r["correct"] for r in dev_rows) / 12
    chosen = choose(dev_accuracy, selection_order(MODES))
    selection = metrics["mode_selection"]
    assert selection["chosen"] == chosen == metrics["student_mode"] and selection["dev_n"] == 12
    assert metrics["student_mode_asked"] == "select"
    assert selection["dev_accuracy"] == pytest.approx(dev_accuracy)
    test_rows = read_jsonl(run / "eval" / "s" / "predictions.jsonl")
    assert {r["id"] for r in test_rows} == {p.id for p in load_run_problems(run, "test")}
    if chosen == "vote":
        assert list(metrics["modes"]) == [*MODES, "vote"]
    else:  # the test set answered in the chosen mode alone, prompted as that task was trained
        assert list(metrics["modes"]) == [chosen] and all(r["mode"] == chosen for r in test_rows)
        template = student_prompt_record("multitask", MODES)["modes"][chosen]["template"]
        first = load_run_problems(run, "test")[0]
        assert test_rows[0]["prompt"] == from_template(first, template)

    dev_written = (dev_dir / "metrics.json").stat().st_mtime_ns
    again = evaluate_models(_select_study(run, student), force=False)["s"]
    assert again["spec_digest"] == metrics["spec_digest"]
    assert (dev_dir / "metrics.json").stat().st_mtime_ns == dev_written  # nothing chosen twice

    ensure_data(_select_study(run, student, dev_size=10))  # another dev slice: chosen and evaluated again
    other = evaluate_models(_select_study(run, student, dev_size=10), force=False)["s"]
    assert other["mode_selection"]["dev_n"] == 10 and other["spec_digest"] != metrics["spec_digest"]


def test_select_needs_a_dev_slice(tmp_path: Path):
    from scalingdown.errors import UserError

    with pytest.raises(UserError, match="eval.student_mode: 'select' chooses on a dev slice"):
        parse_config({"run_dir": str(tmp_path), "eval": {"student_mode": "select"}})

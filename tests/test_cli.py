"""The `scalingdown` command as a user runs it: fast --help, one-line errors with exit 2, real stages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scalingdown.artifacts import read_jsonl

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str, cwd: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1", "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "scalingdown.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd or REPO,
        env=env,
        timeout=timeout,
    )


def test_help_answers_in_under_a_second():
    started = time.perf_counter()
    result = run_cli("--help")
    elapsed = time.perf_counter() - started
    assert result.returncode == 0
    for command in ("validate", "data", "eval", "run"):
        assert command in result.stdout
    assert elapsed < 1.0, f"--help took {elapsed:.2f}s"
    eval_help = run_cli("eval", "--help").stdout
    assert "Samples per problem, majority vote" in eval_help  # the config field's own doc


def test_validate_ok_and_bad(tmp_path):
    ok = run_cli("validate", str(REPO / "configs" / "demo.yaml"))
    assert ok.returncode == 0 and "dataset: synthetic" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "teachers:\n  - {name: a, backend: openai, model: m}\n"
        "  - {name: b, backend: carrier-pigeon, model: m}\n"
    )
    result = run_cli("validate", str(bad))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {bad}:3: teachers[1].backend:")
    assert "Traceback" not in result.stderr


def test_bad_flag_value_names_the_key(tmp_path):
    result = run_cli("data", "--run-dir", str(tmp_path), "--dataset", "mnist")
    assert result.returncode == 2
    assert "data.dataset" in result.stderr and "Traceback" not in result.stderr


def test_data_then_eval_then_predictions_on_the_synthetic_task(tmp_path):
    config = tmp_path / "study.yaml"
    config.write_text(
        f"run_dir: {tmp_path / 'run'}\n"
        "data: {dataset: synthetic, synthetic: {n_train: 200, n_test: 16}}\n"
        "eval: {max_new_tokens: 8, batch_size: 8}\n"
        "models:\n  - name: tiny\n"
        "    tiny: {arch: gpt2, hidden_size: 32, num_layers: 2, num_heads: 2, vocab_size: 300}\n"
    )
    data = run_cli("data", str(config))
    assert data.returncode == 0, data.stderr
    assert "200 train, 16 test" in data.stdout
    evaluated = run_cli("eval", str(config))
    assert evaluated.returncode == 0, evaluated.stderr
    metrics = json.loads((tmp_path / "run" / "eval" / "tiny" / "metrics.json").read_text())
    assert metrics["n"] == 16 and "accuracy" in metrics
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert {"config", "versions", "git_commit", "hardware", "seed"} <= set(manifest)
    # Outputs produced elsewhere, scored against the same run's test problems.
    tests = read_jsonl(tmp_path / "run" / "data" / "test.jsonl")
    preds = tmp_path / "preds.jsonl"
    preds.write_text(
        "".join(json.dumps({"id": t["id"], "text": f"#### {t['answer']}"}) + "\n" for t in tests)
    )
    scored = run_cli("eval", str(config), "--predictions", str(preds))
    assert scored.returncode == 0, scored.stderr
    outside = json.loads((tmp_path / "run" / "eval" / "preds" / "metrics.json").read_text())
    assert outside["accuracy"]["accuracy"] == 1.0


def test_eval_of_a_path_that_is_not_a_model_is_one_line(tmp_path):
    run_dir = tmp_path / "run"
    assert run_cli("data", "--run-dir", str(run_dir)).returncode == 0
    (tmp_path / "empty").mkdir()
    result = run_cli("eval", "--run-dir", str(run_dir), "--model", str(tmp_path / "empty"))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "empty" in result.stderr


def test_eval_before_data_says_what_to_do(tmp_path):
    result = run_cli("eval", "--run-dir", str(tmp_path / "none"), "--model", "x")
    assert result.returncode == 2 and "scalingdown data" in result.stderr


@pytest.mark.parametrize("args", [("validate", "missing.yaml"), ("data", "missing.yaml")])
def test_missing_config_file(args):
    result = run_cli(*args)
    assert result.returncode == 2 and "missing.yaml" in result.stderr and "Traceback" not in result.stderr


def test_dry_run_prints_the_plan_and_runs_nothing(tmp_path):
    config = tmp_path / "study.yaml"
    config.write_text(
        f"run_dir: {tmp_path / 'run'}\n"
        "data: {dataset: gsm8k, test_limit: 100}\n"
        "teachers:\n"
        "  - {name: big, backend: openai, model: m, options: {base_urls: [http://127.0.0.1:9/v1]},\n"
        "     price_input_per_1k: 1.0, price_output_per_1k: 2.0}\n"
        "students:\n"
        "  - {name: small, tiny: {hidden_size: 16, num_heads: 2}}\n"
        "  - {name: huge, tiny: {hidden_size: 256}}\n"
        "report: {references: [huge, missing-model]}\n"
    )
    result = run_cli("run", str(config), "--dry-run")
    assert result.returncode == 0, result.stderr
    out = result.stderr + result.stdout
    assert "7,473 train / 100 test" in out and "7,523" in out  # 7,473 questions + 50 free-mode answers
    assert "estimated teacher cost" in out
    assert "'missing-model' is not a model, student or teacher" in out
    assert not (tmp_path / "run").exists()

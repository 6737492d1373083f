"""Tried as a new user would (issue 10): failed work exits non-zero and names what failed; every bad
input, refused write or unsafe name is one line; no secret of a URL reaches a file or the terminal;
long work prints progress lines when stderr is a log, not a terminal."""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from scalingdown.config import SyntheticConfig
from scalingdown.data.synthetic import generate_splits
from scalingdown.evaluate.prompts import worked_solution

REPO = Path(__file__).resolve().parents[1]
TINY = "{arch: llama, hidden_size: 16, num_layers: 2, num_heads: 2, vocab_size: 300, max_positions: 256}"


def run_cli(*args: str, env: dict | None = None, preexec=None, timeout: int = 300):
    base = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1", "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "scalingdown.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**base, **(env or {})},
        timeout=timeout,
        preexec_fn=preexec,
    )


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens once the socket is closed


def _study(tmp_path: Path, body: str) -> Path:
    config = tmp_path / "study.yaml"
    config.write_text(
        f"run_dir: {tmp_path / 'run'}\n"
        "data: {dataset: synthetic, synthetic: {n_train: 40, n_test: 6, max_steps: 1, max_value: 9}}\n"
        "eval: {max_new_tokens: 4, batch_size: 8, speed_prompts: 0, quantize: []}\n" + body
    )
    return config


def test_teach_where_every_request_failed_exits_1_and_leaks_no_credentials(tmp_path):
    url = f"http://alice:s3cr3t-pw@127.0.0.1:{_closed_port()}/v1"
    config = _study(
        tmp_path,
        f"teachers:\n  - {{name: remote, backend: openai, model: m, options: {{base_urls: ['{url}']}}}}\n"
        "teach: {free_eval_problems: 3}\n",
    )
    assert run_cli("data", str(config)).returncode == 0
    result = run_cli("teach", str(config))
    assert result.returncode == 1, result.stderr
    failed = [line for line in result.stderr.splitlines() if line.startswith("failed: ")]
    assert failed[0].startswith(
        "failed: teacher remote: 40 of 40 requests failed (first reason: cannot connect"
    )
    assert "error: 2 parts of the work failed" in result.stderr and "Traceback" not in result.stderr
    written = [p for p in (tmp_path / "run").rglob("*") if p.is_file() and p.suffix in (".json", ".jsonl")]
    assert any(p.name == "usage.json" for p in written) and any(p.name == "free.jsonl" for p in written)
    for text in [result.stderr, result.stdout, *(p.read_text() for p in written)]:
        assert "s3cr3t-pw" not in text and "alice" not in text
    assert "http://***@127.0.0.1" in result.stderr + (tmp_path / "run" / "manifest.json").read_text()
    shown = run_cli("validate", str(config))
    assert shown.returncode == 0 and "s3cr3t" not in shown.stdout and "***@127.0.0.1" in shown.stdout


def test_eval_where_one_model_fails_exits_1_and_names_it(tmp_path):
    config = _study(
        tmp_path,
        f"models:\n  - {{name: good, tiny: {TINY}}}\n  - {{name: gone, path: {tmp_path / 'nowhere'}}}\n",
    )
    assert run_cli("data", str(config)).returncode == 0
    result = run_cli("eval", str(config))
    assert result.returncode == 1, result.stderr
    assert [
        line.split(":")[1].strip() for line in result.stderr.splitlines() if line.startswith("failed:")
    ] == ["model gone"]
    assert (tmp_path / "run" / "eval" / "good" / "metrics.json").is_file()  # the rest is done and saved


def test_train_where_one_student_fails_exits_1_and_prints_progress_lines_in_a_log(tmp_path):
    train, _ = generate_splits(SyntheticConfig(n_train=40, n_test=6, max_steps=1, max_value=9), 0)
    book = tmp_path / "book.jsonl"
    book.write_text("".join(json.dumps({"id": p.id, "text": worked_solution(p)}) + "\n" for p in train))
    config = _study(
        tmp_path,
        f"teachers:\n  - {{name: book, backend: replay, model: {book}, num_examples: 0}}\n"
        "teach: {free_eval_problems: 0}\n"
        "hyperparameters: {max_steps: 3, batch_size: 8, log_every: 1, checkpoint_every: 3, max_length: 96}\n"
        f"students:\n  - {{name: fine, tiny: {TINY}, method: full}}\n"
        f"  - {{name: broken, tiny: {TINY}, lora: {{target_modules: [no_such_proj]}}}}\n",
    )
    assert run_cli("data", str(config)).returncode == 0
    taught = run_cli("teach", str(config))
    assert taught.returncode == 0, taught.stderr  # a recorded teacher: no free mode, nothing failed
    env = {"TQDM_DISABLE": "", "SCALINGDOWN_PROGRESS_SECONDS": "0"}
    result = run_cli("train", str(config), env=env)
    assert result.returncode == 1, result.stderr
    failed = [line for line in result.stderr.splitlines() if line.startswith("failed: ")]
    assert (
        len(failed) == 1 and failed[0].startswith("failed: student broken:") and "no_such_proj" in failed[0]
    )
    # stderr is a pipe here, as in a SLURM log: plain lines, one per step, and no bar's carriage returns.
    assert "train fine: 0/3 steps (0%), started" in result.stderr
    assert (
        "train fine: 2/3 steps (67%)" in result.stderr
        and "train fine: 3/3 steps (100%), done" in result.stderr
    )
    assert "\r" not in result.stderr
    summary = json.loads((tmp_path / "run" / "students" / "summary.json").read_text())
    assert summary["fine"]["steps"] == 3 and "error" in summary["broken"]


@pytest.mark.parametrize("bad", ["../../outside", "a/b", ".."])
def test_eval_name_must_be_a_plain_file_name(tmp_path, bad):
    run_dir = tmp_path / "run"
    assert run_cli("data", "--run-dir", str(run_dir)).returncode == 0
    result = run_cli("eval", "--run-dir", str(run_dir), "--model", "x", "--name", bad)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "--name:" in result.stderr and "plain file name" in result.stderr
    assert not (tmp_path / "outside").exists()


def test_binary_data_and_predictions_files_are_one_line(tmp_path):
    local = tmp_path / "gsm8k"
    local.mkdir()
    (local / "train.jsonl").write_bytes(b'{"question": "q", "answer": "#### 1"}\n\x00\x00\x89PNG')
    (local / "test.jsonl").write_bytes(b'{"question": "q2", "answer": "#### 2"}\n')
    result = run_cli("data", "--run-dir", str(tmp_path / "r"), "--dataset", "gsm8k", "--path", str(local))
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert f"{local / 'train.jsonl'}:2: this file is a binary file" in result.stderr
    run_dir = tmp_path / "run"
    assert run_cli("data", "--run-dir", str(run_dir)).returncode == 0
    preds = tmp_path / "preds.jsonl"
    preds.write_bytes(b'{"id": "x", "text": "caf\xe9"}\n')
    result = run_cli("eval", "--run-dir", str(run_dir), "--predictions", str(preds))
    assert result.returncode == 2 and f"{preds}:1: this file is not UTF-8 text" in result.stderr


def test_nested_typo_stops_a_dry_run_before_anything(tmp_path):
    config = _study(tmp_path, "students:\n  - name: s\n    path: x\n    hyperparameters:\n      epoch: 2\n")
    result = run_cli("run", str(config), "--dry-run")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: {config}:8: students[0].hyperparameters.epoch: Extra inputs are not permitted"
    )


def _unwritable_dir(tmp_path: Path) -> Path:
    if os.geteuid() != 0:
        folder = tmp_path / "locked"
        folder.mkdir(mode=0o500)
        return folder / "run"
    # root writes through permission bits; sysfs refuses a new directory even to root.
    probe = Path("/sys/scalingdown-run")
    try:
        probe.mkdir()
    except OSError:
        return probe
    probe.rmdir()
    pytest.skip("no directory here refuses writes to root")


def test_a_run_directory_without_write_permission_is_one_line(tmp_path):
    run_dir = _unwritable_dir(tmp_path)
    result = run_cli("data", "--run-dir", str(run_dir))
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "cannot write (" in result.stderr and str(run_dir) in result.stderr


def test_a_full_disk_is_one_line_and_keeps_what_was_done(tmp_path):
    run_dir = tmp_path / "run"
    assert run_cli("data", "--run-dir", str(run_dir)).returncode == 0
    before = (run_dir / "data" / "report.json").read_bytes()

    def small_files() -> None:  # `ulimit -f 8`: a write past 8 KiB fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))

    result = run_cli("data", "--run-dir", str(run_dir), "--test-limit", "150", preexec=small_files)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "cannot write (File too large)" in result.stderr
    assert (run_dir / "data" / "report.json").read_bytes() == before  # the earlier output is intact
    assert not [p for p in (run_dir / "data").iterdir() if p.name.startswith(".")]

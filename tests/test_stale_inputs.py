"""`scalingdown run` after a change recomputes exactly what depends on it (issue 10, item 2).

One tiny study (a recorded teacher, two students, a reference) is run, changed and run again; which
artifacts were rewritten tells which stages reran. Before this, a student's and an evaluation's
"done" keys hashed only their own spec: a new data config or teacher reran data and teach, then
skipped training and evaluation and reported old predictions against new problems.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from scalingdown.config import SyntheticConfig
from scalingdown.config_file import parse_config
from scalingdown.data.synthetic import generate_splits
from scalingdown.errors import PartialFailure
from scalingdown.evaluate.prompts import worked_solution
from scalingdown.study import run_study

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = {"arch": "llama", "hidden_size": 16, "num_layers": 2, "num_heads": 2, "vocab_size": 300}
SYNTHETIC = {"n_train": 40, "n_test": 8, "max_steps": 1, "max_value": 9}
ARTIFACTS = {
    "data": "data/report.json",
    "teach": "teachers/book/rationales.jsonl",
    "train a": "students/a/scalingdown.json",
    "train b": "students/b/scalingdown.json",
    "eval a": "eval/a/metrics.json",
    "eval b": "eval/b/metrics.json",
    "eval ref": "eval/ref/metrics.json",
}


def _book(path: Path, style: str) -> str:
    train, _ = generate_splits(SyntheticConfig(**SYNTHETIC), 0)
    lines = []
    for p in train:
        text = worked_solution(p)
        lines.append(json.dumps({"id": p.id, "text": text if style == "plain" else f"Step by step: {text}"}))
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _stamps(run: Path) -> dict[str, int]:
    return {stage: (run / rel).stat().st_mtime_ns for stage, rel in ARTIFACTS.items()}


def _rerun(config: dict, run: Path) -> set[str]:
    before = _stamps(run)
    try:
        run_study(parse_config(copy.deepcopy(config)))
    except PartialFailure as exc:  # nothing should fail; show what did
        raise AssertionError(exc.failures) from None
    after = _stamps(run)
    return {stage for stage in ARTIFACTS if after[stage] != before[stage]}


def test_a_change_reruns_exactly_what_depends_on_it(tmp_path: Path) -> None:
    run = tmp_path / "run"
    student = {"tiny": TINY, "method": "full", "hyperparameters": {"max_steps": 2}}
    config = {
        "run_dir": str(run),
        "data": {"dataset": "synthetic", "synthetic": SYNTHETIC},
        "teachers": [{"name": "book", "backend": "replay", "model": _book(tmp_path / "a.jsonl", "plain")}],
        "teach": {"free_eval_problems": 0},
        "hyperparameters": {"batch_size": 8, "checkpoint_every": 50, "max_length": 96},
        "students": [{"name": "a", **copy.deepcopy(student)}, {"name": "b", **copy.deepcopy(student)}],
        "models": [{"name": "ref", "tiny": TINY}],
        "report": {"references": ["ref"]},
        "eval": {"max_new_tokens": 4, "batch_size": 8, "speed_prompts": 0, "quantize": []},
    }
    run_study(parse_config(copy.deepcopy(config)))
    assert _rerun(config, run) == set(), "an unchanged study reran something"

    config["students"][0]["hyperparameters"]["max_steps"] = 3  # one student's hyperparameters
    assert _rerun(config, run) == {"train a", "eval a"}

    config["teachers"][0]["model"] = _book(tmp_path / "b.jsonl", "reworded")  # the teacher's model
    assert _rerun(config, run) == {"teach", "train a", "train b", "eval a", "eval b"}

    config["data"]["test_limit"] = 6  # the test set: train.jsonl is the same, so no student retrains
    assert _rerun(config, run) == {"data", "eval a", "eval b", "eval ref"}
    metrics = json.loads((run / "eval" / "ref" / "metrics.json").read_text())
    assert metrics["n"] == 6

    (run / "data" / "test.jsonl").write_text("")  # a split file changed behind the stage's back:
    assert _rerun(config, run) == {"data"}  # rewritten as it was, so the evaluations still hold

    config["data"]["train_limit"] = 30  # the train split: everything downstream
    assert _rerun(config, run) == set(ARTIFACTS)


def test_seeds_are_replicates_trained_and_evaluated_once_each(tmp_path: Path) -> None:
    """`seeds: [0, 1]` trains and evaluates each student once per seed; a seed added later is the only
    new work; replicates differ (the seed reaches the initialisation)."""
    run = tmp_path / "run"
    config = {
        "run_dir": str(run),
        "seeds": [0, 1],
        "data": {"dataset": "synthetic", "synthetic": SYNTHETIC},
        "teachers": [{"name": "book", "backend": "replay", "model": _book(tmp_path / "a.jsonl", "plain")}],
        "teach": {"free_eval_problems": 0},
        "hyperparameters": {"batch_size": 8, "checkpoint_every": 50, "max_length": 96, "max_steps": 2},
        "students": [{"name": "a", "tiny": TINY, "method": "full"}],
        "models": [{"name": "ref", "tiny": TINY}],
        "report": {"references": ["ref"], "bootstrap_samples": 500},
        "eval": {"max_new_tokens": 4, "batch_size": 8, "speed_prompts": 0, "quantize": []},
    }
    run_study(parse_config(copy.deepcopy(config)))
    findings = json.loads((run / "report" / "findings.json").read_text())["findings"][0]
    assert findings["ladder"] == ["a"] and findings["tests"]["a"]["student_seeds"] == 2
    readme = (run / "report" / "README.md").read_text()
    assert "(2 seeds)" in readme and "2 seeds, n = 8" in readme
    metas = {
        s: json.loads((run / "students" / "a" / f"seed-{s}" / "scalingdown.json").read_text()) for s in (0, 1)
    }
    assert metas[0]["seed"] == 0 and metas[1]["seed"] == 1 and metas[0]["losses"] != metas[1]["losses"]
    for s in (0, 1):
        metrics = json.loads((run / "eval" / "a" / f"seed-{s}" / "metrics.json").read_text())
        assert metrics["training_seed"] == s and metrics["n"] == SYNTHETIC["n_test"]
    stamps = {s: (run / "eval" / "a" / f"seed-{s}" / "metrics.json").stat().st_mtime_ns for s in (0, 1)}
    config["seeds"] = [0, 1, 2]
    run_study(parse_config(copy.deepcopy(config)))
    assert (run / "eval" / "a" / "seed-2" / "metrics.json").is_file()
    assert {
        s: (run / "eval" / "a" / f"seed-{s}" / "metrics.json").stat().st_mtime_ns for s in (0, 1)
    } == stamps
    summary = json.loads((run / "students" / "summary.json").read_text())
    assert {"a/seed-0", "a/seed-1", "a/seed-2"} <= set(summary)

"""Combination strategies through the train stage: what a student's scalingdown.json records (its
modes, the strategy's decision and the numbers it came from) and the config keys a mistake names."""

from __future__ import annotations

import json

import pytest

from scalingdown.artifacts import read_json
from scalingdown.errors import UserError
from scalingdown.train.stage import run_train_stage
from tests.train.test_train_stage import _copy_run, _study, taught_run  # noqa: F401 (a fixture)

SHORT = {"max_steps": 2, "batch_size": 16, "max_length": 160, "mixed_precision": "no"}


def _set_stats(run, name: str, **figures) -> None:
    path = run / "teachers" / name / "stats.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **figures}))


def test_a_weighted_students_alphas_are_reproducible_from_stats_json(taught_run, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    _copy_run(taught_run, run)
    _set_stats(run, "careful", verified_share=0.9)
    _set_stats(run, "chatty", verified_share=0.3)
    run_train_stage(_study(run, combine="weighted", hyperparameters=SHORT), progress=False)
    meta = read_json(run / "students" / "s" / "scalingdown.json")
    stats = {t: read_json(run / "teachers" / t / "stats.json") for t in ("careful", "chatty")}
    q = {t: s["verified_share"] for t, s in stats.items()}
    expected = {f"rationale:{t}": 2 * q[t] / sum(q.values()) for t in q}
    assert meta["task_weights"] == pytest.approx({"answer": 1.0, **expected})
    assert meta["combine"]["strategy"] == "weighted" and meta["combine"]["quality"] == q
    assert meta["format"] == "multitask"
    assert list(meta["modes"]) == ["answer", "rationale:careful", "rationale:chatty"]
    # Other measured figures make another student: the teacher statistics are part of its inputs.
    _set_stats(run, "chatty", verified_share=0.6)
    again = run_train_stage(_study(run, combine="weighted", hyperparameters=SHORT), progress=False)["s"]
    assert "skipped" not in again and again["task_weights"]["rationale:chatty"] == pytest.approx(
        2 * 0.6 / 1.5
    )


def test_a_pooled_student_has_only_its_single_mode(taught_run, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    _copy_run(taught_run, run)
    run_train_stage(_study(run, format="single", hyperparameters=SHORT), progress=False)
    meta = read_json(run / "students" / "s" / "scalingdown.json")
    assert meta["format"] == "single" and meta["combine"] == {"strategy": "pool"}
    assert list(meta["modes"]) == ["single"] and meta["examples"] == {"single": 480}


def test_route_records_which_teacher_each_question_went_to(taught_run, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    _copy_run(taught_run, run)
    _set_stats(run, "chatty", verified_share=1.0)
    _set_stats(run, "careful", verified_share=0.5)
    run_train_stage(_study(run, combine="route", hyperparameters=SHORT), progress=False)
    meta = read_json(run / "students" / "s" / "scalingdown.json")
    assert meta["combine"]["ranking"] == ["chatty", "careful"]
    assert meta["combine"]["questions_routed"] == {"careful": 0, "chatty": 240}
    assert meta["examples"] == {"answer": 240, "rationale:chatty": 240}
    assert list(meta["modes"]) == ["answer", "rationale:chatty"]  # a head never trained is no mode


def test_ranking_by_a_figure_the_teachers_lack_is_one_line_and_writes_no_student(taught_run, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    _copy_run(taught_run, run)  # replay teachers: no free-mode accuracy
    with pytest.raises(UserError, match=r"students\[0\]\.rank_by: teacher 'careful' has no measured"):
        run_train_stage(_study(run, combine="route", rank_by="free_accuracy"), progress=False)
    (run / "teachers" / "chatty" / "stats.json").unlink()
    with pytest.raises(UserError, match=r"students\[0\]\.combine: .*teachers/chatty/stats\.json"):
        run_train_stage(_study(run, combine="weighted"), progress=False)
    assert not (run / "students" / "s").exists()

"""Teacher combination strategies on a fixed fixture: exact examples per task and teacher, the routed
teacher of each question, measured alphas reproducible from the teachers' stats.json."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from scalingdown.config import StudentConfig
from scalingdown.data.schema import Problem
from scalingdown.errors import UserError
from scalingdown.train.combine import (
    STRATEGIES,
    CombineInputs,
    TeacherQuality,
    combine_teachers,
    measured_alphas,
    rank_teachers,
    read_teacher_quality,
)


def _problem(i: int) -> Problem:
    return Problem(
        id=f"p-{i}", question=f"What is {i} + 1?", answer=str(i + 1), source="gsm8k", split="train"
    )


PROBLEMS = [_problem(i) for i in range(5)]


def _row(pid: str, text: str, *, sample: int = 0, verified: bool = True) -> dict:
    return {"problem_id": pid, "sample": sample, "text": text, "verified": verified}


# p-0: both teachers (alpha twice); p-1: alpha's is unverified (kept by a 'flag' policy), beta's
# verified; p-2: beta only; p-3: nobody; p-4: alpha only, beta's rationale is empty.
RATIONALES = {
    "alpha": [
        _row("p-0", "0 + 1 = 1. The answer is 1."),
        _row("p-0", "One more than 0 is 1. The answer is 1.", sample=1),
        _row("p-1", "1 + 1 = 3. The answer is 2.", verified=False),
        _row("p-4", "4 + 1 = 5. The answer is 5."),
    ],
    "beta": [
        _row("p-0", "Add one: 1. The answer is 1."),
        _row("p-1", "Add one: 2. The answer is 2."),
        _row("p-2", "Add one: 3. The answer is 3."),
        _row("p-4", "   "),
    ],
}
QUALITY = {
    "alpha": TeacherQuality(verified_share=0.8, free_accuracy=0.3),
    "beta": TeacherQuality(verified_share=0.5, free_accuracy=0.6),
}


def _combine(name: str, **kw) -> object:
    inputs = CombineInputs(problems=PROBLEMS, rationales=RATIONALES, quality=QUALITY, **kw)
    return combine_teachers(name, inputs)


def _per_task_and_problem(examples) -> Counter:
    return Counter((e.task, e.problem_id) for e in examples)


def test_the_registry_holds_the_four_strategies_with_their_frames():
    assert {name: s.frame for name, s in STRATEGIES.items()} == {
        "tasks": "multitask",
        "pool": "single",
        "route": "multitask",
        "weighted": "multitask",
    }
    assert [n for n, s in STRATEGIES.items() if s.ranks_teachers] == ["route", "weighted"]


def test_tasks_is_one_answer_task_and_one_rationale_task_per_teacher():
    combined = _combine("tasks", answer_weight=0.5, rationale_weights={"beta": 2.0})
    assert combined.counts["answer"] == 5
    assert combined.counts["rationale:alpha"] == 4  # the flagged one is learnt too: it was kept
    assert combined.counts["rationale:beta"] == 3  # the empty one is skipped
    assert combined.counts["empty_rationales"] == 1
    assert combined.task_weights == {"answer": 0.5, "rationale:alpha": 1.0, "rationale:beta": 2.0}
    assert combined.trained_tasks == ["answer", "rationale:alpha", "rationale:beta"]
    assert combined.record == {"strategy": "tasks"}
    first = [e.task for e in combined.examples if e.problem_id == "p-0"]
    assert first == ["answer", "rationale:alpha", "rationale:alpha", "rationale:beta"]


def test_pool_is_every_kept_rationale_as_its_own_single_example():
    combined = _combine("pool")
    assert dict(_per_task_and_problem(combined.examples)) == {
        ("single", "p-0"): 3,
        ("single", "p-1"): 2,
        ("single", "p-2"): 1,
        ("single", "p-4"): 1,
    }
    assert combined.task_weights == {"single": 1.0} and combined.trained_tasks == ["single"]
    assert all(e.prompt.endswith("\nAnswer:") for e in combined.examples)


def test_route_picks_the_best_ranked_teacher_with_a_verified_rationale_per_question():
    combined = _combine("route", rank_by="verified_share")  # alpha (0.8) before beta (0.5)
    assert dict(_per_task_and_problem(combined.examples)) == {
        ("answer", "p-0"): 1,
        ("rationale:alpha", "p-0"): 2,  # both of alpha's samples, none of beta's
        ("answer", "p-1"): 1,
        ("rationale:beta", "p-1"): 1,  # alpha's rationale did not verify
        ("answer", "p-2"): 1,
        ("rationale:beta", "p-2"): 1,
        ("answer", "p-3"): 1,  # no rationale at all: the answer task only
        ("answer", "p-4"): 1,
        ("rationale:alpha", "p-4"): 1,
    }
    record = combined.record
    assert record["ranking"] == ["alpha", "beta"] and record["rank_by"] == "verified_share"
    assert record["questions_routed"] == {"alpha": 2, "beta": 2}
    assert record["questions_without_verified_rationale"] == 1
    assert record["quality"] == {"alpha": 0.8, "beta": 0.5}


def test_route_by_free_accuracy_ranks_the_other_way():
    combined = _combine("route", rank_by="free_accuracy")  # beta (0.6) before alpha (0.3)
    routed = {(e.problem_id, e.task) for e in combined.examples if e.task != "answer"}
    assert routed == {
        ("p-0", "rationale:beta"),
        ("p-1", "rationale:beta"),
        ("p-2", "rationale:beta"),
        ("p-4", "rationale:alpha"),  # beta's is empty, so alpha's
    }
    assert combined.counts["rationale:beta"] == 3 and combined.counts["rationale:alpha"] == 1


def test_a_tie_in_quality_goes_to_the_teacher_listed_first():
    assert rank_teachers({"beta": 0.5, "alpha": 0.5, "gamma": 0.9}) == ["gamma", "beta", "alpha"]
    even = {"alpha": TeacherQuality(0.5, None), "beta": TeacherQuality(0.5, None)}
    inputs = CombineInputs(problems=PROBLEMS, rationales=RATIONALES, quality=even, rank_by="verified_share")
    routed = {e.problem_id: e.task for e in combined_examples(inputs) if e.task != "answer"}
    assert routed["p-0"] == "rationale:alpha"


def combined_examples(inputs: CombineInputs) -> list:
    return combine_teachers("route", inputs).examples


def test_weighted_sets_alphas_from_measured_quality_and_keeps_the_tasks_examples():
    weighted = _combine("weighted", rank_by="verified_share")
    tasks = _combine("tasks")
    assert weighted.examples == tasks.examples  # only the weights differ
    assert weighted.task_weights == {
        "answer": 1.0,
        "rationale:alpha": pytest.approx(2 * 0.8 / 1.3),
        "rationale:beta": pytest.approx(2 * 0.5 / 1.3),
    }
    assert weighted.record["alphas"] == {
        "alpha": weighted.task_weights["rationale:alpha"],
        "beta": weighted.task_weights["rationale:beta"],
    }
    assert measured_alphas({"a": 0.7, "b": 0.7}) == {"a": 1.0, "b": 1.0}  # equal teachers: 'tasks'
    assert measured_alphas({"a": 0.0, "b": 0.0}) == {"a": 1.0, "b": 1.0}  # nothing to tell them apart


def _write_stats(run: Path, name: str, stats: dict) -> Path:
    path = run / "teachers" / name / "stats.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(stats))
    return path


def test_weighted_alphas_are_reproducible_from_the_stats_files(tmp_path):
    _write_stats(tmp_path, "alpha", {"verified_share": 0.75, "free_accuracy": {"accuracy": 0.4, "n": 50}})
    _write_stats(tmp_path, "beta", {"verified_share": 0.25, "free_accuracy": {"accuracy": 0.2, "n": 50}})
    for rank_by, key in (("verified_share", None), ("free_accuracy", "accuracy")):
        quality = read_teacher_quality(tmp_path, ["alpha", "beta"], rank_by=rank_by, where="students[0]")
        inputs = CombineInputs(problems=PROBLEMS, rationales=RATIONALES, quality=quality, rank_by=rank_by)
        record = combine_teachers("weighted", inputs).record
        stats = {
            t: json.loads((tmp_path / "teachers" / t / "stats.json").read_text()) for t in ("alpha", "beta")
        }
        q = {t: s[rank_by] if key is None else s[rank_by][key] for t, s in stats.items()}
        assert record["quality"] == q
        assert record["alphas"] == pytest.approx({t: 2 * q[t] / sum(q.values()) for t in q})
        assert all(record["stats_files"][t] for t in q)


def test_missing_statistics_name_the_config_key(tmp_path):
    _write_stats(tmp_path, "alpha", {"verified_share": 0.5, "free_accuracy": None})
    with pytest.raises(UserError, match=r"students\[2\]\.combine: .*teachers/beta/stats\.json"):
        read_teacher_quality(tmp_path, ["alpha", "beta"], rank_by="verified_share", where="students[2]")
    with pytest.raises(
        UserError, match=r"students\[2\]\.rank_by: teacher 'alpha' has no measured free_accuracy"
    ):
        read_teacher_quality(tmp_path, ["alpha"], rank_by="free_accuracy", where="students[2]")


def test_a_weight_for_someone_else_names_the_key():
    with pytest.raises(UserError, match=r"students\[0\]\.rationale_weights\.gamma"):
        _combine("tasks", rationale_weights={"gamma": 2.0})


@pytest.mark.parametrize(
    ("given", "combine", "rank_by"),
    [
        ({}, "tasks", None),
        ({"format": "multitask"}, "tasks", None),
        ({"format": "single"}, "pool", None),
        ({"format": "single", "combine": "pool"}, "pool", None),
        ({"combine": "route"}, "route", "verified_share"),
        ({"combine": "weighted", "rank_by": "free_accuracy"}, "weighted", "free_accuracy"),
    ],
)
def test_format_is_the_old_name_of_combine(given, combine, rank_by):
    spec = StudentConfig(name="s", path="x", **given)
    assert (spec.combine, spec.rank_by) == (combine, rank_by)


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (
            {"format": "single", "combine": "tasks"},
            r"students\[0\]\.combine: 'tasks' contradicts format 'single'",
        ),
        ({"format": "multitask", "combine": "route"}, r"students\[0\]\.combine: 'route' contradicts"),
        ({"combine": "pool", "rank_by": "verified_share"}, r"students\[0\]\.rank_by: only combine 'route'"),
        ({"rank_by": "free_accuracy"}, r"students\[0\]\.rank_by: only combine"),
        ({"combine": "weighted", "rationale_weights": {"a": 2.0}}, r"students\[0\]\.rationale_weights: "),
        ({"combine": "mixed"}, r"students\[0\]\.combine: Input should be 'tasks', 'pool', 'route' or"),
    ],
)
def test_inconsistent_combination_settings_are_one_line_naming_the_key(given, message):
    from scalingdown.config_file import parse_config

    with pytest.raises(UserError, match=message) as error:
        parse_config({"students": [{"name": "s", "path": "x", **given}]})
    assert "\n" not in str(error.value)

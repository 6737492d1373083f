"""The finder on synthetic prediction rows whose answer is known by construction."""

from __future__ import annotations

import pytest

from scalingdown.evaluate.metrics import accuracy
from scalingdown.evaluate.paired import mcnemar_exact
from scalingdown.report.collect import ModelRecord
from scalingdown.report.finder import (
    ablation_pairs,
    find_smallest_winners,
    format_count,
    format_p,
)

N = 100


def model(name: str, kind: str, params: int | None, right: set[int], *, ids: range = range(N), teachers=None):
    rows = [{"id": f"p{i}", "correct": i in right} for i in ids]
    return ModelRecord(
        name=name,
        kind=kind,
        parameters=params,
        accuracy=accuracy([r["correct"] for r in rows]),
        predictions=rows,
        teachers=teachers,
    )


REF = model("ref", "reference", 1_000_000, set(range(50)))  # 50%


def find(models, **kw):
    options = {"alpha": 0.05, "test": "mcnemar", "samples": 500, "seed": 0, **kw}
    return find_smallest_winners(models, ["ref"], **options)[0]


def test_the_smallest_significant_winner_is_chosen_not_the_biggest_difference() -> None:
    students = [
        model("big", "student", 500_000, set(range(50)) | set(range(50, 90))),  # +40 points
        model("small", "student", 50_000, set(range(50)) | set(range(50, 65))),  # +15: b=15, c=0
        model("tiny", "student", 10_000, set(range(45)) | set(range(50, 55))),  # 0 points: b=5, c=5
    ]
    f = find([REF, *students])
    assert f.winner == "small" and f.winner_parameters == 50_000 and not f.not_smaller
    assert f.size_ratio == pytest.approx(20.0)
    assert (f.comparison.b, f.comparison.c, f.comparison.n) == (15, 0, N)
    assert f.comparison.p == pytest.approx(mcnemar_exact(15, 0))
    assert set(f.comparisons) == {"big", "small", "tiny"}
    text = f.statement()
    assert text.startswith(
        "The smallest student that beats ref is small (50K params, 20.0x smaller): +15.0 points"
    )
    assert "McNemar p = 6.1e-05, n = 100" in text  # 2 / 2**15


def test_a_better_but_not_significant_student_does_not_win() -> None:
    # +3 points from b=3, c=0: p = 0.25, not below 0.05.
    close = model("close", "student", 20_000, set(range(50)) | {50, 51, 52})
    worse = model("worse", "student", 30_000, set(range(40)))
    f = find([REF, close, worse])
    assert f.winner is None and f.best == "close" and f.best_parameters == 20_000
    assert f.comparison.p == pytest.approx(0.25)
    text = f.statement()
    assert text.startswith("No student beats ref at p < 0.05 (McNemar test).")
    assert "The best student, close (20K params), is +3.0 points" in text and "p = 0.25" in text


def test_a_winner_larger_than_the_reference_is_reported_but_flagged() -> None:
    small_loser = model("small", "student", 100_000, set(range(48)))
    large_winner = model("large", "student", 3_000_000, set(range(50)) | set(range(50, 80)))
    f = find([REF, small_loser, large_winner])
    assert f.winner == "large" and f.not_smaller
    text = f.statement()
    assert "is large (3M params, 3.0x larger than ref: NOT SMALLER)" in text
    assert "No student smaller than ref beats it." in text


def test_students_are_aligned_with_the_reference_by_problem_id() -> None:
    # The reference answered only the first 40 problems; the student is compared on those alone.
    ref = model("ref", "reference", 1_000_000, set(range(20)), ids=range(40))
    student = model("s", "student", 10_000, set(range(35)))  # on p0..p39: 35 right vs 20
    f = find([ref, student])
    assert f.comparisons["s"].n == 40
    assert (f.comparisons["s"].b, f.comparisons["s"].c) == (15, 0)
    assert f.winner == "s"


def test_students_of_unknown_size_come_after_every_known_size() -> None:
    unknown = model("unknown", "student", None, set(range(100)))
    known = model("known", "student", 900_000, set(range(80)))
    f = find([REF, unknown, known])
    assert f.winner == "known"


def test_only_students_are_candidates() -> None:
    other = model("other-model", "model", 10, set(range(100)))
    teacher = model("teacher", "teacher", None, set(range(100)))
    f = find([REF, other, teacher])
    assert f.winner is None and f.problem and "no student" in f.problem


def test_a_reference_without_predictions_is_a_stated_problem() -> None:
    ref = ModelRecord(name="ref", kind="reference", missing=["eval/ref/predictions.jsonl not found"])
    f = find([ref, model("s", "student", 10, set(range(90)))])
    assert f.winner is None
    assert f.statement().startswith("ref: no comparison possible")
    assert "eval/ref/predictions.jsonl not found" in f.statement()


def test_a_student_sharing_no_problem_with_the_reference_is_skipped_with_the_reason() -> None:
    stranger = model("stranger", "student", 10, set(range(200, 300)), ids=range(200, 300))
    good = model("good", "student", 20, set(range(80)))
    f = find([REF, stranger, good])
    assert f.winner == "good"
    assert "share no problem id" in f.skipped["stranger"]


def test_the_bootstrap_test_decides_with_its_own_p() -> None:
    student = model("s", "student", 10_000, set(range(50)) | set(range(50, 70)))
    f = find([REF, student], test="bootstrap", samples=2000)
    assert f.winner == "s" and f.comparison.test == "bootstrap"
    assert f.comparison.p == pytest.approx(1 / 2000)  # b=20, c=0: no resample reaches 0
    assert "paired bootstrap p < 0.0005" in f.statement()


def test_ablation_pairs_compare_same_size_students_with_nested_teacher_sets() -> None:
    multi = model("multi", "student", 1000, set(range(70)), teachers=["a", "b"])
    single = model("single", "student", 1000, set(range(50)), teachers=["a"])
    other_size = model("other", "student", 5000, set(range(10)), teachers=["b"])
    pairs = ablation_pairs([multi, single, other_size], samples=500)
    assert [(p.multi, p.single) for p in pairs] == [("multi", "single")]
    assert pairs[0].comparison.diff == pytest.approx(0.20)
    assert pairs[0].comparison.p == pytest.approx(mcnemar_exact(20, 0))
    assert "multi (teachers: a+b) vs single (a): +20.0 points" in pairs[0].statement(500)


@pytest.mark.parametrize(
    ("n", "text"),
    [(None, "unknown"), (950, "950"), (12_300, "12.3K"), (1_500_000, "1.5M"), (7_000_000_000, "7B")],
)
def test_format_count(n, text) -> None:
    assert format_count(n) == text


def test_format_p() -> None:
    assert format_p(0.0312, "mcnemar", 1000) == "= 0.0312"
    assert format_p(0.00002, "mcnemar", 1000) == "= 2.0e-05"
    assert format_p(0.001, "bootstrap", 1000) == "< 0.001"

"""The finder on synthetic outcomes whose answer is known by construction: seed-pooled one-sided
tests, a fixed-sequence test down the ladder (largest first), Holm across references."""

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
    quantisation_losses,
)

N = 100


def model(name, kind, params, right, *, ids=range(N), teachers=None, **extra):
    rows = [{"id": f"p{i}", "correct": i in right} for i in ids]
    return ModelRecord(
        name=name,
        kind=kind,
        parameters=params,
        accuracy=accuracy([r["correct"] for r in rows]),
        predictions=rows,
        teachers=teachers,
        **extra,
    )


def seeded(name, params, rights):
    """A student trained with one seed per entry of `rights`."""
    record = model(name, "student", params, set())
    record.predictions = []
    record.seed_outcomes = {s: {f"p{i}": i in right for i in range(N)} for s, right in enumerate(rights)}
    return record


REF = model("ref", "reference", 1_000_000, set(range(50)))  # 50%


def find(models, references=("ref",), **kw):
    options = {"alpha": 0.05, "samples": 2000, "seed": 0, "crossover_samples": 100, **kw}
    return find_smallest_winners(models, list(references), **options)


def test_the_sequence_goes_down_the_ladder_and_stops_at_the_first_loss() -> None:
    students = [
        model("big", "student", 500_000, set(range(50)) | set(range(50, 90))),  # +40 points
        model("small", "student", 50_000, set(range(50)) | set(range(50, 65))),  # +15: 15 wins, 0 losses
        model("tiny", "student", 10_000, set(range(45)) | set(range(50, 55))),  # 0 points
    ]
    (f,) = find([REF, *students])
    assert f.ladder == ["big", "small", "tiny"]
    assert f.decisions == {"big": "rejected", "small": "rejected", "tiny": "not rejected"}
    assert f.winner == "small" and f.winner_parameters == 50_000 and f.stopped_at == "tiny"
    assert f.size_ratio == pytest.approx(20.0) and not f.not_smaller
    # 15 discordant problems, all the student's: the sampled sign-flip p sits at its floor, 1/(1+samples).
    assert f.comparison.p == pytest.approx(1 / 2001) and not f.comparison.exact
    text = f.statement()
    assert text.startswith(
        "In parameters, the smallest student that beats ref is small (50K params, 20.0x smaller)"
    )
    assert "one-sided p < 0.0005, 1 seed, n = 100" in text and "fixed-sequence test down the ladder" in text
    # With few discordant problems every sign pattern is enumerated: one seed a side, that is the exact
    # McNemar test, one-sided.
    (exact,) = find([REF, model("s6", "student", 1_000, set(range(50)) | set(range(50, 56)))])
    assert exact.comparison.exact and exact.comparison.p == pytest.approx(mcnemar_exact(6, 0) / 2)
    assert "The next smaller, tiny, did not win" in text


def test_a_smaller_student_that_wins_after_a_loss_is_not_the_finding() -> None:
    """The uncorrected smallest-of-K rule would name `lucky`; the sequence stopped at `mid`."""
    students = [
        model("big", "student", 500_000, set(range(50)) | set(range(50, 80))),
        model("mid", "student", 100_000, set(range(50)) | {50, 51}),  # +2: not significant
        model("lucky", "student", 10_000, set(range(50)) | set(range(50, 70))),  # +20
    ]
    (f,) = find([REF, *students])
    assert f.winner == "big" and f.stopped_at == "mid"
    assert f.decisions["lucky"] == "not tested" and f.tests["lucky"].p < 0.001  # detail, uncorrected


def test_no_winner_names_the_first_step() -> None:
    close = model("close", "student", 20_000, set(range(50)) | {50, 51, 52})  # +3: p = 1/8
    worse = model("worse", "student", 30_000, set(range(40)))
    (f,) = find([REF, close, worse])
    assert f.winner is None and f.stopped_at == "worse" and f.ladder == ["worse", "close"]
    text = f.statement()
    assert text.startswith("In parameters, no student beats ref (fixed-sequence")
    assert "The largest, worse (30K params), is -10.0 points" in text


def test_a_winner_larger_than_the_reference_is_reported_but_flagged() -> None:
    large = model("large", "student", 3_000_000, set(range(50)) | set(range(50, 80)))
    small = model("small", "student", 100_000, set(range(48)))
    (f,) = find([REF, small, large])
    assert f.winner == "large" and f.not_smaller
    assert "large (3M params: NOT SMALLER than ref)" in f.statement()


def test_students_are_aligned_with_the_reference_by_problem_id() -> None:
    ref = model("ref", "reference", 1_000_000, set(range(20)), ids=range(40))
    student = model("s", "student", 10_000, set(range(35)))  # on p0..p39: 35 right vs 20
    (f,) = find([ref, student])
    assert f.tests["s"].n == 40 and f.winner == "s"


def test_unknown_sizes_come_last_and_only_students_are_candidates() -> None:
    unknown = model("unknown", "student", None, set(range(100)))
    known = model("known", "student", 900_000, set(range(80)))
    other = model("other-model", "model", 10, set(range(100)))
    (f,) = find([REF, unknown, known, other])
    assert f.ladder == ["known", "unknown"] and f.winner == "unknown"  # both won, in that order


def test_a_reference_without_predictions_is_a_stated_problem() -> None:
    ref = ModelRecord(name="ref", kind="reference", missing=["eval/ref/predictions.jsonl not found"])
    (f,) = find([ref, model("s", "student", 10, set(range(90)))])
    assert f.winner is None and f.statement().startswith("ref: no comparison possible")
    assert "eval/ref/predictions.jsonl not found" in f.statement()


def test_an_untestable_student_stops_the_sequence_where_it_stands() -> None:
    good = model("good", "student", 20, set(range(80)))
    stranger = model("stranger", "student", 10, set(range(200, 300)), ids=range(200, 300))
    (f,) = find([REF, stranger, good])
    assert f.winner == "good" and "stranger" in f.skipped and f.decisions["stranger"] == "not rejected"


def test_holm_across_references_splits_alpha() -> None:
    ref2 = model("ref2", "reference", 2_000_000, set(range(60)))
    # +6 over ref (6 wins): one-sided p = 1/64 = 0.0156; alone it would win at 0.05, with two
    # references the first level is 0.025 - still a win; +5 (p = 1/32 = 0.031) would not be.
    s = model("s", "student", 10_000, set(range(50)) | set(range(60, 66)))
    t = model("t", "student", 5_000, set(range(50)) | set(range(60, 65)))
    f1, f2 = find([REF, ref2, s, t], references=("ref", "ref2"))
    assert f1.level == f2.level == pytest.approx(0.025)
    assert f1.winner == "s" and f1.decisions["t"] == "not rejected"  # 0.031 > 0.025
    (alone,) = find([REF, s, t])
    assert alone.level == 0.05 and alone.winner == "t"
    assert "Holm across 2 sequences" in f1.procedure


def test_seeds_are_pooled_per_problem() -> None:
    # Three seeds, each +10 on different problems: pooled per problem, 30 problems at +1/3.
    rights = [set(range(50)) | set(range(50 + 10 * k, 60 + 10 * k)) for k in range(3)]
    student = seeded("s", 10_000, rights)
    (f,) = find([REF, student])
    test = f.tests["s"]
    assert test.student_seeds == 3 and test.diff == pytest.approx(0.10) and f.winner == "s"
    assert "3 seeds" in f.statement()


def test_a_ladder_gets_a_fitted_crossover() -> None:
    students = [
        model(f"s{k}", "student", size, set(range(acc)))
        for k, (size, acc) in enumerate([(1_000, 20), (10_000, 35), (100_000, 60), (1_000_000, 80)])
    ]
    (f,) = find([REF, *students])
    fit = f.crossover
    assert fit["status"] == "bracketed" and 10_000 < fit["n_star"] < 100_000
    assert fit["ci_low"] <= fit["n_star"] <= fit["ci_high"] and len(fit["curve"]) == len(fit["grid"])


def test_quantised_rungs_make_a_ladder_in_bytes() -> None:
    big = model("big", "student", 500_000, set(range(90)), weight_bytes=2_000_000)
    rung = model("big-int8", "student", 500_000, set(range(88)), weight_bytes=500_000, quantized_from="big")
    small = model("small", "student", 50_000, set(range(70)), weight_bytes=200_000)
    params, in_bytes = find([REF, big, rung, small])
    assert params.scale == "parameters" and params.ladder == ["big", "small"] and params.winner == "small"
    assert in_bytes.scale == "bytes" and in_bytes.ladder == ["big", "big-int8", "small"]
    assert in_bytes.winner == "small" and "In bytes" in in_bytes.statement()
    (loss,) = quantisation_losses([REF, big, rung, small], samples=500)
    assert loss["rung"] == "big-int8" and loss["comparison"].diff == pytest.approx(-0.02)


def test_ablation_pairs_compare_same_size_students_with_nested_teacher_sets() -> None:
    multi = model("multi", "student", 1000, set(range(58)), teachers=["a", "b"])
    single = model("single", "student", 1000, set(range(50)), teachers=["a"])
    other_size = model("other", "student", 5000, set(range(10)), teachers=["b"])
    pairs = ablation_pairs([multi, single, other_size], samples=500)
    assert [(p.multi, p.single) for p in pairs] == [("multi", "single")]
    assert pairs[0].comparison.diff == pytest.approx(0.08)
    assert pairs[0].comparison.p == pytest.approx(mcnemar_exact(8, 0))  # two-sided, exact (2^8 <= 500)
    assert "multi (teachers: a+b) vs single (a): +8.0 points" in pairs[0].statement(500)


@pytest.mark.parametrize(
    ("n", "text"),
    [(None, "unknown"), (950, "950"), (12_300, "12.3K"), (1_500_000, "1.5M"), (7_000_000_000, "7B")],
)
def test_format_count(n, text) -> None:
    assert format_count(n) == text


def test_format_p() -> None:
    assert format_p(0.0312, 1000) == "= 0.0312"
    assert format_p(0.00002, 1000) == "= 2.0e-05"
    assert format_p(0.001, 1000, exact=False) == "< 0.001"

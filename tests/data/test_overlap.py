"""Train/test overlap: planted near and exact duplicates, unrelated text, and real GSM8K at full size."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from scalingdown.data.gsm8k import load_gsm8k
from scalingdown.data.overlap import find_overlaps, normalise
from scalingdown.data.schema import Problem


def make(pid: str, question: str) -> Problem:
    return Problem(id=pid, question=question, answer="1", source="gsm8k", split=pid.split("-")[0])


def test_normalise() -> None:
    assert normalise("  It costs $1,000!\n\tDoesn't it? ") == "it costs 1000 doesnt it"


def test_planted_near_and_exact_duplicates_are_found(gsm8k_dir: Path) -> None:
    real_train = load_gsm8k("train", gsm8k_dir)[:300]
    real_test = load_gsm8k("test", gsm8k_dir)[:40]
    near_source, exact_source = real_test[5], real_test[17]
    # A paraphrase that changes one number keeps most 8-grams; case/punctuation/space changes keep all.
    words = near_source.question.split()
    assert len(words) >= 30  # long enough that one changed word leaves most 8-grams intact
    words[len(words) // 2] = "9999"
    planted = [
        make("train-near", " ".join(words)),
        make("train-exact", "  " + exact_source.question.upper().replace(".", " . ").replace("?", "")),
    ]
    train = real_train[:100] + planted[:1] + real_train[100:] + planted[1:]
    found = {o.test_id: o for o in find_overlaps(train, real_test, n=8, threshold=0.5)}

    near = found[near_source.id]
    assert near.train_id == "train-near" and not near.exact
    assert 0.5 <= near.containment < 1.0
    exact = found[exact_source.id]
    assert exact.train_id == "train-exact" and exact.exact and exact.containment == 1.0
    assert set(found) == {near_source.id, exact_source.id}  # the other 38 real questions are not flagged


def test_unrelated_questions_are_not_flagged(gsm8k_dir: Path, aqua_dir: Path) -> None:
    from scalingdown.data.aqua import load_aqua

    gsm8k_train = load_gsm8k("train", gsm8k_dir)
    aqua_test = load_aqua("test", aqua_dir)
    assert find_overlaps(gsm8k_train, aqua_test, n=8, threshold=0.5) == []


def test_best_train_question_and_threshold() -> None:
    test = [make("test-0", "a b c d e f g h i j")]  # 10 words -> 3 distinct 8-grams
    weak = make("train-weak", "a b c d e f g h x y")  # shares 1 of 3
    strong = make("train-strong", "zz a b c d e f g h i")  # shares 2 of 3
    (hit,) = find_overlaps([weak, strong], test, n=8, threshold=0.5)
    assert hit.train_id == "train-strong" and hit.containment == pytest.approx(2 / 3) and not hit.exact
    assert find_overlaps([weak, strong], test, n=8, threshold=0.7) == []
    assert find_overlaps([weak], test, n=8, threshold=0.5) == []


def test_short_questions_are_one_gram() -> None:
    test = [make("test-0", "How many apples?"), make("test-1", "how many pears")]
    train = [make("train-0", "how many apples"), make("train-1", "Tell me: how many pears are there in all?")]
    (hit,) = find_overlaps(train, test, n=8, threshold=0.5)
    assert (hit.test_id, hit.train_id, hit.exact) == ("test-0", "train-0", True)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        find_overlaps([], [], n=0, threshold=0.5)
    with pytest.raises(ValueError):
        find_overlaps([], [], n=8, threshold=0)


def test_real_gsm8k_overlap_is_small_and_fast(gsm8k_dir: Path) -> None:
    train, test = load_gsm8k("train", gsm8k_dir), load_gsm8k("test", gsm8k_dir)
    start = time.perf_counter()
    flagged = find_overlaps(train, test, n=8, threshold=0.5)
    seconds = time.perf_counter() - start
    print(f"GSM8K {len(train)}x{len(test)} overlap check: {len(flagged)} flagged in {seconds:.2f} s")
    assert len(flagged) <= 0.01 * len(test)  # GSM8K's test set was written apart from train
    assert all(o.containment >= 0.5 for o in flagged)
    assert seconds < 10  # all pairs would take far longer; the inverted index takes well under 1 s

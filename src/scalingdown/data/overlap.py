"""Train/test near-duplicate check by word n-gram containment.

A test question that (nearly) appears in the training data inflates test accuracy, so the data stage
reports every test question whose text is largely contained in one training question:

    containment(test, train) = |ngrams(test) & ngrams(train)| / |ngrams(test)|

taken against the training question that shares the most n-grams with it; a test question is
flagged when that share reaches `threshold`. Texts are normalised first (lower case, punctuation
removed, whitespace collapsed), and a question shorter than `n` words counts as a single
gram of its whole text, so very short questions match only when identical.

Speed: an inverted index from n-gram hash to the training questions that contain it means each test
question touches only the training questions it shares a gram with, not all pairs; GSM8K at full
size (7,473 train x 1,319 test, n=8) takes well under a second.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from scalingdown.data.schema import Problem

_PUNCTUATION = re.compile(r"[^\w\s]|_")


@dataclass(frozen=True)
class Overlap:
    """A flagged test question and the training question that contains most of it."""

    test_id: str
    train_id: str
    containment: float  # share of the test question's n-grams found in the train question, 0..1
    exact: bool  # the two normalised texts are identical


def normalise(text: str) -> str:
    """Lower case, punctuation removed, whitespace collapsed: 'It costs $1,000!' -> 'it costs 1000'.

    Removing (not spacing out) punctuation makes '1,000' and '1000' one word."""
    return " ".join(_PUNCTUATION.sub("", text.lower()).split())


def ngram_hashes(normalised: str, n: int) -> set[int]:
    """Hashes of the distinct word n-grams of a normalised text; fewer than n words -> one gram."""
    words = normalised.split()
    if not words:
        return set()
    if len(words) < n:
        return {hash(tuple(words))}
    return {hash(tuple(words[i : i + n])) for i in range(len(words) - n + 1)}


def find_overlaps(
    train: Sequence[Problem], test: Sequence[Problem], *, n: int, threshold: float
) -> list[Overlap]:
    """Test questions whose best containment in one training question is >= `threshold`, in test order.

    Ties between training questions sharing as many grams go to the earliest one, so the result is
    deterministic. An exact (normalised) duplicate always wins and has containment 1.0.
    """
    if n < 1:
        raise ValueError(f"n-gram size must be at least 1, got {n}")
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")

    exact_index: dict[str, int] = {}
    postings: dict[int, list[int]] = defaultdict(list)  # gram hash -> train positions, ascending
    for position, problem in enumerate(train):
        text = normalise(problem.question)
        exact_index.setdefault(text, position)
        for gram in ngram_hashes(text, n):
            postings[gram].append(position)

    flagged: list[Overlap] = []
    for problem in test:
        text = normalise(problem.question)
        if text in exact_index:
            flagged.append(Overlap(problem.id, train[exact_index[text]].id, 1.0, True))
            continue
        grams = ngram_hashes(text, n)
        if not grams:
            continue
        shared: Counter[int] = Counter()
        for gram in grams:
            shared.update(postings.get(gram, ()))
        if not shared:
            continue
        best_count = max(shared.values())
        containment = best_count / len(grams)
        if containment >= threshold:
            best = min(position for position, count in shared.items() if count == best_count)
            flagged.append(Overlap(problem.id, train[best].id, containment, False))
    return flagged

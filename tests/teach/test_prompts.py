"""Teacher prompts: in-context example selection, templates, chat messages and rationale bodies."""

from __future__ import annotations

import math
import re
import time
from collections import Counter

import pytest

from scalingdown.data.aqua import load_aqua
from scalingdown.data.gsm8k import load_gsm8k
from scalingdown.data.schema import Problem
from scalingdown.errors import UserError
from scalingdown.teach.prompts import (
    SYSTEM_PROMPT,
    ExampleSelector,
    as_chat,
    build_teacher_prompt,
    rationale_body,
)


def _problem(i: int, question: str | None = None, rationale: str | None = "Add: 1 + 1 = 2.") -> Problem:
    return Problem(
        id=f"p-{i:03d}",
        question=question or f"Question number {i} about apples?",
        answer=str(i),
        rationale=rationale,
        source="gsm8k",
        split="train",
    )


# ---- example selection


@pytest.mark.parametrize("method", ["random", "tfidf"])
def test_examples_never_include_the_question_itself(method):
    pool = [_problem(i) for i in range(30)]
    # The same question under another id, with other case and spacing: still the question itself.
    twin = _problem(99, question="  QUESTION number 7   about apples?")
    pool.append(twin)
    selector = ExampleSelector(pool, method=method, seed=1)
    for problem in pool:
        chosen = selector.select(problem, 28)
        assert problem.id not in {p.id for p in chosen}
        assert len(chosen) == len({p.id for p in chosen}) == 28
    chosen_for_7 = {p.id for p in selector.select(pool[7], 29)}
    assert "p-007" not in chosen_for_7 and "p-099" not in chosen_for_7


@pytest.mark.parametrize("method", ["random", "tfidf"])
def test_examples_come_only_from_problems_with_a_rationale(method):
    pool = [_problem(i, rationale=None if i % 2 else "5 + 3 = 8.") for i in range(20)]
    selector = ExampleSelector(pool, method=method, seed=0)
    for problem in pool:
        assert all(p.rationale for p in selector.select(problem, 5))
    with pytest.raises(UserError, match=r"teachers\[2\]\.num_examples: 10 worked examples asked for.*only 9"):
        ExampleSelector(pool, method=method, seed=0, where="teachers[2]").select(pool[0], 10)


def test_random_examples_are_deterministic_per_seed_and_problem():
    pool = [_problem(i) for i in range(200)]
    forward = ExampleSelector(pool, method="random", seed=5)
    backward = ExampleSelector(pool, method="random", seed=5)
    firsts = {p.id: [e.id for e in forward.select(p, 4)] for p in pool}
    seconds = {p.id: [e.id for e in backward.select(p, 4)] for p in reversed(pool)}
    assert firsts == seconds  # independent of the order in which problems are asked
    other_seed = ExampleSelector(pool, method="random", seed=6)
    changed = sum(firsts[p.id] != [e.id for e in other_seed.select(p, 4)] for p in pool)
    assert changed > 190
    # Spread over the pool rather than always the same few.
    counts = Counter(e for ids in firsts.values() for e in ids)
    assert len(counts) > 150


def test_tfidf_finds_the_planted_near_duplicate(gsm8k_dir):
    train = load_gsm8k("train", gsm8k_dir)[:2000]
    for query in load_gsm8k("test", gsm8k_dir)[:5]:
        numbers = re.findall(r"\d+", query.question)
        near = query.question.replace(numbers[0], str(int(numbers[0]) + 3), 1)
        planted = _problem(900, question=near, rationale="planted")
        exact = _problem(901, question=query.question, rationale="exact copy")
        selector = ExampleSelector([*train[:1000], planted, *train[1000:], exact], method="tfidf", seed=0)
        chosen = selector.select(query, 3)
        assert chosen[0].id == planted.id
        assert exact.id not in {p.id for p in chosen}


def _reference_cosine(texts: list[str], query: str) -> list[float]:
    """Plain TF-IDF: (1 + log tf) * (log((1 + N) / (1 + df)) + 1), L2-normalised, dot products."""
    tokenize = lambda text: Counter(re.findall(r"[^\W\d_]+|\d+(?:\.\d+)?", text.casefold()))  # noqa: E731
    docs = [tokenize(t) for t in texts]
    df = Counter(term for doc in docs for term in doc)
    idf = {term: math.log((1 + len(docs)) / (1 + count)) + 1 for term, count in df.items()}

    def vector(counts):
        v = {t: (1 + math.log(c)) * idf[t] for t, c in counts.items() if t in idf}
        norm = math.sqrt(sum(x * x for x in v.values())) or 1.0
        return {t: x / norm for t, x in v.items()}

    q = vector(tokenize(query))
    return [sum(q.get(t, 0.0) * x for t, x in vector(doc).items()) for doc in docs]


def test_tfidf_ranking_matches_a_plain_implementation(gsm8k_dir):
    pool = load_gsm8k("train", gsm8k_dir)[:300]
    selector = ExampleSelector(pool, method="tfidf", seed=0)
    for query in load_gsm8k("test", gsm8k_dir)[:10]:
        scores = _reference_cosine([p.question for p in pool], query.question)
        expected = sorted(range(len(pool)), key=lambda i: (-round(scores[i], 9), i))[:5]
        assert [p.id for p in selector.select(query, 5)] == [pool[i].id for i in expected]


def test_tfidf_is_fast_on_the_gsm8k_train_split(gsm8k_dir):
    train = load_gsm8k("train", gsm8k_dir)
    queries = load_gsm8k("test", gsm8k_dir)[:500]
    started = time.perf_counter()
    selector = ExampleSelector(train, method="tfidf", seed=0)
    for query in queries:
        selector.select(query, 4)
    elapsed = time.perf_counter() - started
    print(f"\ntfidf: index of {len(train)} + {len(queries)} queries in {elapsed:.2f} s")
    assert elapsed < 10  # about 1 s here; a few thousand queries take a few seconds


def test_unknown_selection_method_names_the_key():
    with pytest.raises(UserError, match=r"teachers\[0\]\.example_selection"):
        ExampleSelector([], method="bm25", seed=0, where="teachers[0]")


def test_zero_examples_need_no_pool():
    assert ExampleSelector([], method="tfidf", seed=0).select(_problem(1), 0) == []


# ---- prompts


def test_teacher_forcing_prompt_gives_question_options_and_answer(aqua_dir):
    dev = load_aqua("dev", aqua_dir)
    problem, examples = dev[0], dev[1:3]
    prompt = build_teacher_prompt(problem, examples, mode="teacher-forcing")
    last = prompt.rsplit("Question: ", 1)[1]
    assert last.startswith(problem.question.strip())
    assert all(f"{letter}) {text}" in last for letter, text in problem.options.items())
    assert last.endswith(f"\nAnswer: {problem.answer}\nReasoning:")
    assert "The answer is X." in prompt and "step by step" in prompt
    # Worked examples come first, in the shape of the expected output.
    for example in examples:
        reasoning = f"{example.rationale.strip()}\nThe answer is {example.answer}."
        block = f"Answer: {example.answer}\nReasoning: {reasoning}"
        assert block in prompt
        assert prompt.index(example.question.strip()) < prompt.index(problem.question.strip())


def test_free_prompt_leaves_out_the_gold_answer(gsm8k_dir):
    train = load_gsm8k("train", gsm8k_dir)
    problem = load_gsm8k("test", gsm8k_dir)[0]
    prompt = build_teacher_prompt(problem, train[:2], mode="free")
    assert prompt.endswith(f"Question: {problem.question.strip()}\nAnswer:")
    assert f"Answer: {problem.answer}" not in prompt and "Reasoning:" not in prompt
    assert f"The answer is {train[0].answer}." in prompt  # the examples still show their answers
    assert "Options:" not in prompt


def test_custom_template_fills_every_field(aqua_dir):
    problem = load_aqua("dev", aqua_dir)[0]
    template = "{examples}Q: {question}{options}\nGiven: {answer}\nWhy?"
    prompt = build_teacher_prompt(problem, [], mode="teacher-forcing", template=template)
    expected_options = "\nOptions: " + " ".join(f"{k}) {v}" for k, v in problem.options.items())
    assert prompt == f"Q: {problem.question.strip()}{expected_options}\nGiven: {problem.answer}\nWhy?"


@pytest.mark.parametrize(
    ("template", "mode", "message"),
    [
        ("Solve: {examples}", "free", r"must contain \{question\}"),
        ("{question} {answer}", "free", r"free mode must not give the answer"),
        ("{question}", "teacher-forcing", r"add \{answer\}"),
        ("{question} {answer} {hint}", "teacher-forcing", r"unknown template field \{hint\}"),
        ("{question} {answer} {}", "teacher-forcing", r"unknown template field \{\}"),
        ("{question.upper} {answer}", "teacher-forcing", r"unknown template field"),
        ("{question} {answer!r}", "teacher-forcing", r"no conversion or format spec"),
        ("{question} {answer} {", "teacher-forcing", r"invalid template"),
    ],
)
def test_template_mistakes_name_the_config_key(template, mode, message):
    with pytest.raises(UserError, match=r"^teachers\[1\]\.template: .*" + message):
        build_teacher_prompt(_problem(1), [], mode=mode, template=template, where="teachers[1].template")


def test_examples_without_an_examples_field_are_an_error():
    with pytest.raises(UserError, match=r"teachers\[0\]\.template: 1 worked examples.*num_examples: 0"):
        build_teacher_prompt(
            _problem(1), [_problem(2)], mode="free", template="{question}", where="teachers[0].template"
        )


def test_literal_braces_survive():
    prompt = build_teacher_prompt(_problem(1), [], mode="free", template="{{json}} {question}")
    assert prompt.startswith("{json} Question number 1")


def test_as_chat_wraps_the_prompt():
    messages = as_chat("Question: 1 + 1?\nAnswer:")
    assert [m["role"] for m in messages] == ["system", "user"]
    assert "careful math teacher" in messages[0]["content"] and messages[0]["content"] == SYSTEM_PROMPT
    assert messages[1]["content"] == "Question: 1 + 1?\nAnswer:"


# ---- rationale bodies

BODIES = [
    ("\nA: 5 + 3 = 8. The answer is 8.", "5 + 3 = 8. The answer is 8."),
    ("Answer: Reasoning: 5 + 3 = 8. The answer is 8.", "5 + 3 = 8. The answer is 8."),
    (" Reasoning: 5 + 3 = 8.\nThe answer is 8.\n\nQuestion: How many? 2 + 2 = 4. The answer is 4.",
     "5 + 3 = 8.\nThe answer is 8."),
    ("5 + 3 = 8. The answer is 8 apples. I hope this helps!", "5 + 3 = 8. The answer is 8 apples."),
    ("It costs $1.50. The answer is $1.50.\nNote: prices vary.", "It costs $1.50. The answer is $1.50."),
    ("So 72 in all. The answer is:\n72\n\nExtra words", "So 72 in all. The answer is:\n72"),
    ("The answer is 7. Wait: 5 + 3 = 8. The answer is 8. Bye",
     "The answer is 7. Wait: 5 + 3 = 8. The answer is 8."),
    ("He ends with 5 + 3 = 8 apples\n", "He ends with 5 + 3 = 8 apples"),
    ("1. Add: 3 + 4 = 7.\n2. The answer is 7.\nQ: Next one", "1. Add: 3 + 4 = 7.\n2. The answer is 7."),
    ("Option C fits. The answer is C.\n\nQuestion 2: ...", "Option C fits. The answer is C."),
]  # fmt: skip


@pytest.mark.parametrize(("text", "expected"), BODIES)
def test_rationale_body_cuts(text, expected):
    assert rationale_body(text) == expected


def test_rationale_body_keeps_every_teacher_samples_answer(teacher_samples):
    import json

    from scalingdown.data.answers import extract_numeric

    for row in json.loads(teacher_samples.read_text()):
        body = rationale_body(row["output"])
        assert not body.startswith("A:")
        assert extract_numeric(body, strict=True) == extract_numeric(row["output"], strict=True)

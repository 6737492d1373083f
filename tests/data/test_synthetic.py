"""The synthetic task: seeded, exact, within its knobs, and split without leaks."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from scalingdown.config import SyntheticConfig
from scalingdown.data.schema import Problem
from scalingdown.data.synthetic import (
    BROAD_ONLY_TEMPLATES,
    CORE_TEMPLATES,
    OPS,
    generate,
    generate_splits,
)
from scalingdown.errors import UserError
from scalingdown.evaluate.prompts import worked_solution
from scalingdown.teach.verify import verify_rationale

EQUATION = re.compile(r"(\d+) ([-+x/]) (\d+) = (\d+)\.")


def equations(problem: Problem) -> list[tuple[int, str, int, int]]:
    return [(int(a), op, int(b), int(c)) for a, op, b, c in EQUATION.findall(problem.rationale)]


def test_same_seed_same_problems_and_other_seeds_differ():
    first = generate(300, seed=7, split="train", max_steps=4)
    again = generate(300, seed=7, split="train", max_steps=4)
    other = generate(300, seed=8, split="train", max_steps=4)
    assert [p.model_dump() for p in first] == [p.model_dump() for p in again]
    assert [p.question for p in first] != [p.question for p in other]
    assert len({p.question for p in first} & {p.question for p in other}) < 30


@pytest.mark.parametrize(
    ("templates", "max_steps", "max_value"),
    [("core", 3, 20), ("core", 2, 2), ("broad", 6, 50), ("broad", 4, 5)],
)
def test_every_rationale_verifies_and_stays_in_range(templates, max_steps, max_value):
    problems = generate(
        2500, seed=1, split="train", max_steps=max_steps, max_value=max_value, templates=templates
    )
    for p in problems:
        verdict = verify_rationale(p, worked_solution(p))  # the general check, as teachers get it
        assert verdict.verified and verdict.equations_checked == p.meta["steps"], (p, verdict)
        eqs = equations(p)
        assert len(eqs) == p.meta["steps"] == len(p.meta["ops"])
        assert [op for _, op, _, _ in eqs] == p.meta["ops"]
        # the question states exactly the start value and each step's operand, in order
        stated = [int(x) for x in re.findall(r"\d+", p.question)]
        assert stated == [eqs[0][0]] + [b for _, _, b, _ in eqs]
        assert all(2 <= x <= max_value for x in stated)
        assert all(1 <= c <= 10 * max_value for *_, c in eqs)  # never negative, products bounded
        assert p.answer == str(int(p.answer)) and int(p.answer) >= 0
        assert p.answer == str(eqs[-1][3])
        assert "The answer is" not in p.rationale
        assert p.rationale.startswith(p.question.split(" ")[0] + " starts with ")
        assert (p.source, p.split, p.options) == ("synthetic", "train", None)


def test_step_counts_cover_the_range_and_every_op_appears():
    problems = generate(3000, seed=2, split="train", min_steps=2, max_steps=5)
    steps = Counter(p.meta["steps"] for p in problems)
    assert set(steps) == {2, 3, 4, 5}
    ops = Counter(op for p in problems for op in p.meta["ops"])
    assert set(ops) == set(OPS)
    assert min(ops.values()) > 0.1 * sum(ops.values())  # no operation is a rarity
    assert {p.meta["template"] for p in problems} == {t.name for t in CORE_TEMPLATES}


def test_division_divides_exactly_and_multiplication_uses_x():
    problems = generate(2000, seed=3, split="train")
    divisions = [e for p in problems for e in equations(p) if e[1] == "/"]
    products = [e for p in problems for e in equations(p) if e[1] == "x"]
    assert divisions and products
    assert all(a == b * c for a, _, b, c in divisions)
    assert all(a * b == c for a, _, b, c in products)
    assert not any("*" in p.rationale for p in problems)


def test_the_general_verifier_rejects_wrong_work_on_the_synthetic_task():
    p = Problem(
        id="t",
        question="Mia has 7 apples. She buys 5 more apples. Then she gives away 3 apples. How many?",
        answer="9",
        rationale="Mia starts with 7 apples.\nShe buys 5 more: 7 + 5 = 12.\nShe gives away 3: 12 - 3 = 9.",
        source="synthetic",
        split="train",
        meta={"steps": 2},
    )

    def category(rationale: str, gold: str = "9") -> str:
        problem = p.model_copy(update={"answer": gold})
        return verify_rationale(problem, f"{rationale}\nThe answer is 9.").category

    assert category(p.rationale) == "verified"
    assert category("Up: 3 * 4 = 12.\nDown: 12 - 3 = 9.") == "verified"  # "*" reads as "x"
    assert category(p.rationale.replace("= 12", "= 13")) == "arithmetic_error"
    assert category("A: 7 + 5 = 12.\nB: 12 - 2 = 9.") == "arithmetic_error"
    assert category("So:") == "no_work"  # the gold answer alone shows nothing
    assert category("A: 7 + 5 = 12.") == "inconsistent_chain"  # the work ends at 12, not at 9
    assert category(p.rationale, gold="10") == "wrong_answer"
    # Unlike the old synthetic-only check, the general one does not require each step to start from
    # the previous result (GSM8K work is rarely one chain): correct steps that end at 9 verify.
    assert category("A: 7 + 5 = 12.\nB: 11 - 2 = 9.") == "verified"


def test_splits_are_disjoint_with_distinct_test_questions():
    config = SyntheticConfig(n_train=3000, n_test=300)
    train, test = generate_splits(config, seed=0)
    assert len(train) == 3000 and len(test) == 300
    assert {p.question for p in train}.isdisjoint({p.question for p in test})
    assert len({p.question for p in test}) == 300
    assert [p.id for p in test[:2]] == ["synthetic-test-00000", "synthetic-test-00001"]
    assert len({p.id for p in train}) == 3000 and all(p.split == "train" for p in train)
    assert generate_splits(config, seed=0)[1] == test
    assert generate_splits(config, seed=1)[1] != test
    # independent calls with other seeds still never put a test question in a training set
    more_train = generate(5000, seed=99, split="train")
    assert {p.question for p in more_train}.isdisjoint({p.question for p in test})


def test_too_few_distinct_test_questions_is_a_user_error():
    config = SyntheticConfig(n_train=10, n_test=500, max_steps=1, max_value=2)
    with pytest.raises(UserError, match="n_test"):
        generate_splits(config, seed=0)


def test_broad_adds_templates_and_covers_core_phrasings_without_core_test_questions():
    core_names = {t.name for t in CORE_TEMPLATES}
    broad = generate(12000, seed=5, split="train", templates="broad", max_steps=3)
    broad_templates = {p.meta["template"] for p in broad}
    assert core_names < broad_templates
    assert {t.name for t in BROAD_ONLY_TEMPLATES} <= broad_templates
    core_people = {p.question.split(" ")[0] for p in generate(2000, seed=5, split="train")}
    assert core_people < {p.question.split(" ")[0] for p in broad}  # other names too

    def skeletons(problems):
        return {re.sub(r"\d+", "#", line) for p in problems for line in p.rationale.split("\n")}

    core_train, core_test = generate_splits(SyntheticConfig(n_train=1500, n_test=300), seed=0)
    broad_lines = skeletons(broad)
    missing = skeletons(core_train + core_test) - broad_lines
    assert not missing, sorted(missing)[:5]
    assert skeletons(broad) - skeletons(core_train)  # broad says things core never does
    assert {p.question for p in broad}.isdisjoint({p.question for p in core_test})


def test_bad_knobs_are_user_errors():
    with pytest.raises(UserError, match="min_steps"):
        generate(5, seed=0, split="train", min_steps=4, max_steps=2)
    with pytest.raises(UserError, match="templates"):
        generate(5, seed=0, split="train", templates="fancy")
    with pytest.raises(UserError, match="max_value"):
        generate(5, seed=0, split="train", max_value=1)
    with pytest.raises(ValueError, match="min_steps"):
        SyntheticConfig(min_steps=3, max_steps=2)

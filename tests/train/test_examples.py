"""Training examples from real files: rationale loading, both formats, the student's prompt record."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from scalingdown.data.gsm8k import load_gsm8k
from scalingdown.data.schema import Problem, write_problems
from scalingdown.errors import UserError
from scalingdown.evaluate import stage as eval_stage
from scalingdown.evaluate.prompts import from_template, zero_shot
from scalingdown.train.examples import (
    ANSWER_TEMPLATE,
    TrainExample,
    answer_prompt,
    build_examples,
    data_hash,
    load_rationales,
    student_prompt_record,
)

NUMERIC = Problem(
    id="p-0",
    question="Tom has 3 apples and buys 4 more. How many?",
    answer="7",
    source="gsm8k",
    split="train",
)
CHOICE = Problem(
    id="p-1",
    question=" A car goes 60 km in 2 hours. Its speed? ",
    options={"A": "20 km/h", "B": "30 km/h", "C": "40 km/h", "D": "50 km/h", "E": "60 km/h"},
    answer="B",
    source="aqua_rat",
    split="train",
)
LONELY = Problem(id="p-2", question="What is 2 + 2?", answer="4", source="gsm8k", split="train")
PROBLEMS = [NUMERIC, CHOICE, LONELY]


def row(problem_id: str, text: str, *, sample: int = 0, verified: bool = True, teacher: str = "t") -> dict:
    return {
        "problem_id": problem_id,
        "teacher": teacher,
        "sample": sample,
        "text": text,
        "answer": None,
        "verified": verified,
        "flagged": not verified,
    }


def write_teacher(run: Path, name: str, rows: list[dict]) -> Path:
    path = run / "teachers" / name / "rationales.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def run(tmp_path) -> Path:
    run = tmp_path / "run"
    write_teacher(
        run,
        "big",
        [
            row("p-1", "60 / 2 = 30, so B.\n\nThe answer is B.", sample=1),
            row("p-0", "3 + 4 = 7. The answer is 7.", sample=0),
            row("p-0", "Adding gives 7. The answer is 7.", sample=1),
            row("p-2", "2 + 2 = 5. The answer is 5.", verified=False),
        ],
    )
    write_teacher(run, "small", [row("p-0", "   "), row("p-1", "Speed is 60 / 2 = 30 km/h")])
    (run / "teachers" / "failed").mkdir()  # a teacher whose stage failed: stats.json only
    return run


def test_answer_prompt_is_the_zero_shot_prompt():
    for problem in PROBLEMS:
        assert answer_prompt(problem) == zero_shot(problem)
    assert "\nOptions: A) 20 km/h B) 30 km/h" in answer_prompt(CHOICE)


def test_evaluation_prompts_a_numeric_student_exactly_as_it_was_trained(tmp_path):
    (tmp_path / "scalingdown.json").write_text(json.dumps(student_prompt_record("multitask")))
    prompts = eval_stage.build_prompts([NUMERIC, LONELY], "student", model_path=tmp_path)
    assert prompts == [answer_prompt(NUMERIC), answer_prompt(LONELY)]
    record = eval_stage.student_template(tmp_path)
    assert record["format"] == "multitask" and record["stop"] == ["\nQuestion:", "\n\n"]


def test_from_template_renders_options_as_training_does():
    assert from_template(CHOICE, ANSWER_TEMPLATE) == answer_prompt(CHOICE)


def test_load_rationales_keeps_verified_rows_in_teacher_order(run):
    counts = Counter()
    loaded = load_rationales(run, ["small", "big"], problems=PROBLEMS, counts=counts)
    assert list(loaded) == ["small", "big"]
    assert [r["problem_id"] for r in loaded["big"]] == ["p-1", "p-0", "p-0"]
    assert counts["unverified_dropped"] == 1
    everything = load_rationales(run, None, problems=PROBLEMS, include_unverified=True)
    assert list(everything) == ["big", "small"]  # every teacher with a rationales file, by name
    assert len(everything["big"]) == 4


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (
            "nobody",
            r"^students\[2\]\.teachers\[1\]: 'nobody' is not a teacher of this run; teachers with "
            r"rationales: big, small$",
        ),
        ("failed", r"^students\[2\]\.teachers\[1\]: 'failed' has no rationales; teachers with rationales"),
    ],
)
def test_unknown_teacher_names_the_config_key_and_the_known_teachers(run, name, message):
    with pytest.raises(UserError, match=message):
        load_rationales(run, ["big", name], problems=PROBLEMS, where="students[2].teachers")


def test_train_problems_default_to_the_data_stage_output(run):
    with pytest.raises(UserError, match="run `scalingdown data` first"):
        load_rationales(run, ["big"])
    write_problems(run / "data" / "train.jsonl", PROBLEMS[:2])  # p-2 is no train problem now
    with pytest.raises(UserError, match=r"big/rationales.jsonl:4: problem_id 'p-2' is not a train problem"):
        load_rationales(run, ["big"])
    write_problems(run / "data" / "train.jsonl", PROBLEMS)
    assert len(load_rationales(run, ["big"])["big"]) == 3


def test_no_teachers_at_all_says_to_run_teach(tmp_path):
    with pytest.raises(UserError, match="run `scalingdown teach` first"):
        load_rationales(tmp_path, None, problems=PROBLEMS)


def test_a_row_about_a_foreign_problem_names_file_and_line(run):
    path = write_teacher(run, "odd", [row("p-0", "ok. The answer is 7."), row("test-9", "x")])
    with pytest.raises(UserError, match=rf"^{path}:2: problem_id 'test-9' is not a train problem"):
        load_rationales(run, ["odd"], problems=PROBLEMS)
    path.write_text(json.dumps({"problem_id": "p-0", "text": None}) + "\n")
    with pytest.raises(UserError, match=rf"^{path}:1: rationale row needs a string 'text'"):
        load_rationales(run, ["odd"], problems=PROBLEMS)


def test_multitask_examples(run):
    counts = Counter()
    rationales = load_rationales(run, ["big", "small"], problems=PROBLEMS)
    examples = build_examples(
        PROBLEMS, rationales, fmt="multitask", instructions={"small": "Be brief."}, counts=counts
    )
    assert [(e.problem_id, e.task) for e in examples] == [
        ("p-0", "answer"),
        ("p-0", "rationale:big"),
        ("p-0", "rationale:big"),
        ("p-1", "answer"),
        ("p-1", "rationale:big"),
        ("p-1", "rationale:small"),
        ("p-2", "answer"),
    ]
    assert examples[0] == TrainExample("p-0", "answer", zero_shot(NUMERIC), " The answer is 7.")
    assert examples[1].prompt == f"Explain like big would.\nQuestion: {NUMERIC.question}\nRationale:"
    assert examples[2].target == " Adding gives 7. The answer is 7."
    assert examples[4].target == " 60 / 2 = 30, so B.\nThe answer is B."  # blank line collapsed
    assert (
        examples[5].prompt.startswith("Be brief.\nQuestion: A car goes")
        and "\nOptions: A)" in examples[5].prompt
    )
    assert examples[5].target == " Speed is 60 / 2 = 30 km/h"  # multitask keeps a teacher's text as is
    assert counts["empty_rationales"] == 1
    assert counts["problems_without_rationale"] == 1  # p-2: only an unverified rationale
    assert counts["answer"] == 3 and counts["rationale:big"] == 3 and counts["rationale:small"] == 1


def test_single_format_ends_every_target_with_the_answer(run):
    counts = Counter()
    rationales = load_rationales(run, ["big", "small"], problems=PROBLEMS)
    examples = build_examples(PROBLEMS, rationales, fmt="single", counts=counts)
    assert [e.problem_id for e in examples] == ["p-0", "p-0", "p-1", "p-1"]
    assert all(
        e.task == "single" and e.prompt == answer_prompt(PROBLEMS[int(e.problem_id[-1])]) for e in examples
    )
    assert examples[3].target == " Speed is 60 / 2 = 30 km/h\nThe answer is B."
    assert counts["answer_line_appended"] == 1
    assert counts["problems_without_rationale"] == 1


def test_examples_and_hash_are_deterministic(run):
    rationales = load_rationales(run, ["big", "small"], problems=PROBLEMS)
    first = build_examples(PROBLEMS, rationales, fmt="multitask")
    shuffled = {name: list(reversed(rows)) for name, rows in rationales.items()}
    again = build_examples(PROBLEMS, shuffled, fmt="multitask")
    assert again == first and data_hash(again) == data_hash(first)
    changed = [*first[:-1], TrainExample("p-2", "answer", first[-1].prompt, " The answer is 5.")]
    assert data_hash(changed) != data_hash(first)
    assert data_hash(first[:-1]) != data_hash(first)


def test_real_gsm8k_problems_with_gold_rationales_as_a_teacher(gsm8k_dir, tmp_path):
    problems = load_gsm8k("train", gsm8k_dir)[:200]
    write_teacher(tmp_path, "gold", [row(p.id, p.rationale) for p in problems])
    rationales = load_rationales(tmp_path, ["gold"], problems=problems)
    counts = Counter()
    single = build_examples(problems, rationales, fmt="single", counts=counts)
    assert len(single) == 200
    # GSM8K rationales never say "The answer is", so each gets the final sentence appended.
    assert counts["answer_line_appended"] == 200
    assert all(e.target.endswith(f"The answer is {p.answer}.") for e, p in zip(single, problems, strict=True))
    assert all("\n\n" not in e.target for e in single)

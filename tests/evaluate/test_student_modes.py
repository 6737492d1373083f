"""A student's inference modes: each mode prompts exactly as the student was trained, the vote is a
majority over the modes with the documented tie rule, and a vote evaluation records every mode."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from scalingdown.artifacts import read_jsonl
from scalingdown.config import EvalConfig
from scalingdown.data.answers import score
from scalingdown.data.schema import Problem
from scalingdown.errors import UserError
from scalingdown.evaluate import stage
from scalingdown.evaluate.student_modes import resolve_mode, student_modes, vote
from scalingdown.train.combine import CombineInputs, combine_teachers
from scalingdown.train.examples import build_examples, student_prompt_record

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NUMERIC = Problem(
    id="n-0", question="Tom has 3 apples and buys 4 more. How many?", answer="7", source="gsm8k", split="test"
)
CHOICE = Problem(
    id="c-0",
    question=" A car goes 60 km in 2 hours. Its speed? ",
    options={"A": "20 km/h", "B": "30 km/h", "C": "40 km/h", "D": "50 km/h", "E": "60 km/h"},
    answer="B",
    source="aqua_rat",
    split="test",
)
PROBLEMS = [NUMERIC, CHOICE]
RATIONALES = {
    "big": [{"problem_id": "n-0", "text": "3 + 4 = 7.\nThe answer is 7.", "verified": True}],
    "small": [{"problem_id": "c-0", "text": "60 / 2 = 30, so B.", "verified": True}],
}


def _student(folder: Path, record: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "scalingdown.json").write_text(json.dumps(record))
    return folder


@pytest.mark.parametrize("strategy", ["tasks", "pool", "route", "weighted"])
def test_each_mode_prompts_exactly_as_the_student_was_trained(strategy, tmp_path):
    from scalingdown.train.combine import STRATEGIES, TeacherQuality

    quality = {t: TeacherQuality(verified_share=0.5, free_accuracy=None) for t in RATIONALES}
    inputs = CombineInputs(PROBLEMS, RATIONALES, quality=quality, rank_by="verified_share")
    combined = combine_teachers(strategy, inputs)
    folder = _student(tmp_path, student_prompt_record(STRATEGIES[strategy].frame, combined.trained_tasks))
    modes = list(student_modes(json.loads((folder / "scalingdown.json").read_text())))
    assert modes == combined.trained_tasks
    compared = 0
    for mode in modes:
        prompts = stage.build_prompts(PROBLEMS, "student", model_path=folder, mode=mode)
        for example in combined.examples:
            if example.task == mode:
                index = [p.id for p in PROBLEMS].index(example.problem_id)
                assert prompts[index] == example.prompt  # character for character
                compared += 1
    assert compared == len(combined.examples)
    voted = stage.build_prompts(PROBLEMS, "student", model_path=folder, mode="vote")
    assert voted == [
        p for mode in modes for p in stage.build_prompts(PROBLEMS, "student", model_path=folder, mode=mode)
    ]


def test_a_teachers_own_instruction_with_braces_is_prompted_as_trained(tmp_path):
    instructions = {"big": "Reason like {big}, step by step."}
    examples = build_examples(PROBLEMS, RATIONALES, fmt="multitask", instructions=instructions)
    record = student_prompt_record("multitask", ["answer", "rationale:big"], instructions)
    prompts = stage.build_prompts(
        PROBLEMS, "student", model_path=_student(tmp_path, record), mode="rationale:big"
    )
    trained = next(e.prompt for e in examples if e.task == "rationale:big")
    assert prompts[0] == trained and trained.startswith("Reason like {big}, step by step.\nQuestion: Tom")


def test_modes_a_student_lacks_name_the_setting(tmp_path):
    pooled = _student(tmp_path / "pool", student_prompt_record("single", ["single"]))
    with pytest.raises(UserError, match=r"eval\.student_mode: 'answer' is not a mode of this student"):
        stage.build_prompts(PROBLEMS, "student", model_path=pooled, mode="answer")
    tasks = _student(tmp_path / "tasks", student_prompt_record("multitask", ["answer", "rationale:big"]))
    with pytest.raises(UserError, match=r"'rationale:small' is not a mode .* answer, rationale:big, vote"):
        stage.build_prompts(PROBLEMS, "student", model_path=tasks, mode="rationale:small")


def test_auto_is_the_answer_task_else_the_single_task_and_old_students_have_their_one_template():
    tasks = student_prompt_record("multitask", ["answer", "rationale:big"])
    assert resolve_mode(tasks, "auto").mode == "answer"
    assert resolve_mode(student_prompt_record("single", ["single"]), "auto").mode == "single"
    assert list(resolve_mode(tasks, "vote").modes) == ["answer", "rationale:big"]
    old = {"format": "single", "prompt_template": "Q: {question}\nA:"}  # saved before modes existed
    assert student_modes(old) == {"single": "Q: {question}\nA:"}
    assert resolve_mode({"prompt_template": "Q: {question}\nA:"}, "auto").mode == "answer"


def _scores(*answers) -> dict:
    return {f"m{i}": {"answer": a, "strict_answer": a} for i, a in enumerate(answers)}


@pytest.mark.parametrize(
    ("answers", "winner"),
    [
        (("7", "8", "8"), "8"),  # a plain majority, against the answer task
        (("7", "8", "7", "8"), "7"),  # a tie goes to the answer task's answer
        ((None, "8", "9"), "8"),  # no answer from the answer task: the first teacher in training order
        (("9", "7", "7.0", "8"), "7"),  # equal numbers count as one answer, reported as first written
        ((None, None), None),  # nobody answered
    ],
)
def test_vote_is_a_majority_over_the_modes_with_ties_to_the_answer_task_then_teacher_order(answers, winner):
    result = vote(NUMERIC, _scores(*answers))
    assert result["answer"] == winner
    assert result["correct"] == (winner is not None and float(winner) == 7)


def test_strict_and_flexible_answers_are_voted_separately():
    per_mode = {
        "answer": {"answer": "7", "strict_answer": None},
        "rationale:a": {"answer": "5", "strict_answer": "5"},
        "rationale:b": {"answer": "7", "strict_answer": "5"},
    }
    result = vote(NUMERIC, per_mode)
    assert (result["answer"], result["correct"]) == ("7", True)
    assert (result["strict_answer"], result["strict_correct"]) == ("5", False)


@pytest.fixture
def student_dir(tiny_llama, tmp_path) -> Path:
    """An (untrained) tiny model saved as a multitask student with two rationale heads."""
    folder = tmp_path / "student"
    shutil.copytree(tiny_llama, folder)
    record = student_prompt_record("multitask", ["answer", "rationale:careful", "rationale:chatty"])
    return _student(folder, record)


def test_a_vote_evaluation_generates_every_mode_and_records_each(student_dir, synthetic_problems, tmp_path):
    _, test = synthetic_problems
    test = test[:6]
    out = tmp_path / "eval"
    settings = EvalConfig(max_new_tokens=10, batch_size=4, student_mode="vote")
    metrics = stage.evaluate_model(
        test,
        name="s",
        model_path=str(student_dir),
        settings=settings,
        out_dir=out,
        prompt_format="student",
        progress=False,
    )
    rows = read_jsonl(out / "predictions.jsonl")
    modes = ["answer", "rationale:careful", "rationale:chatty"]
    assert metrics["student_mode"] == "vote" and list(metrics["modes"]) == [*modes, "vote"]
    for problem, row in zip(test, rows, strict=True):
        assert row["mode"] == "vote" and list(row["modes"]) == modes
        for mode in modes:
            asked = stage.build_prompts([problem], "student", model_path=student_dir, mode=mode)[0]
            own = row["modes"][mode]
            assert own["prompt"] == asked
            assert "\nQuestion:" not in own["output"]  # the student's stop strings end it
            assert own["answer"] == score(problem, own["output"]).flexible_answer
        assert row["answer"] == vote(problem, row["modes"])["answer"]
        assert len(row["new_tokens"]) == len(modes)  # every mode's generation counts
    for mode in modes:
        correct = sum(r["modes"][mode]["correct"] for r in rows)
        assert metrics["modes"][mode]["accuracy"]["correct"] == correct
    assert metrics["modes"]["vote"]["accuracy"] == metrics["accuracy"]
    assert metrics["accuracy"]["correct"] == sum(r["correct"] for r in rows)


def test_a_rationale_mode_reads_the_answer_from_the_rationale(student_dir, synthetic_problems, tmp_path):
    _, test = synthetic_problems
    test = test[:4]
    settings = EvalConfig(max_new_tokens=10, batch_size=4, student_mode="rationale:chatty")
    metrics = stage.evaluate_model(
        test,
        name="s",
        model_path=str(student_dir),
        settings=settings,
        out_dir=tmp_path / "eval",
        prompt_format="student",
        progress=False,
    )
    rows = read_jsonl(tmp_path / "eval" / "predictions.jsonl")
    assert metrics["student_mode"] == "rationale:chatty" and list(metrics["modes"]) == ["rationale:chatty"]
    assert metrics["settings"]["stop"] == ["\nQuestion:", "\n\n"]
    for problem, row in zip(test, rows, strict=True):
        assert row["prompt"].startswith("Explain like chatty would.\nQuestion: ")
        assert row["answer"] == score(problem, row["output"]).flexible_answer


def test_an_interrupted_vote_resumes_whole_problems(student_dir, synthetic_problems, tmp_path):
    _, test = synthetic_problems
    test = test[:5]
    out = tmp_path / "eval"
    settings = EvalConfig(max_new_tokens=6, batch_size=8, student_mode="vote")
    run = dict(name="s", model_path=str(student_dir), settings=settings, out_dir=out, progress=False)
    stage.evaluate_model(test, prompt_format="student", **run)
    finished = read_jsonl(out / "predictions.jsonl")
    prompts = stage.build_prompts(test, "student", model_path=student_dir, mode="vote")
    fingerprint = stage._fingerprint(str(student_dir), "student", settings, prompts, test)
    kept = [{**row, "answer": "resumed", "fingerprint": fingerprint} for row in finished[:2]]
    (out / "predictions.partial.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))
    again = stage.evaluate_model(test, prompt_format="student", **run)
    rows = read_jsonl(out / "predictions.jsonl")
    assert again["resumed_problems"] == 2
    assert [r["answer"] for r in rows[:2]] == ["resumed", "resumed"]
    assert all(r["answer"] != "resumed" and len(r["modes"]) == 3 for r in rows[2:])


def test_select_takes_the_best_dev_accuracy_with_ties_to_the_cheaper_mode():
    from scalingdown.evaluate.student_modes import choose, selection_order

    order = selection_order(["answer", "rationale:a", "rationale:b"])
    assert order == ["answer", "rationale:a", "rationale:b", "vote"]
    assert selection_order(["single"]) == ["single"]  # one mode: nothing to vote over
    best = {"answer": 0.2, "rationale:a": 0.5, "rationale:b": 0.4, "vote": 0.45}
    assert choose(best, order) == "rationale:a"
    assert choose({"answer": 0.5, "rationale:a": 0.5, "vote": 0.5}, order) == "answer"
    assert choose({"answer": 0.1, "rationale:b": 0.6, "vote": 0.6}, order) == "rationale:b"
    assert choose({"answer": 0.1, "vote": 0.3}, order) == "vote"
    with pytest.raises(UserError, match="eval.student_mode"):
        choose({"other": 1.0}, order)
    with pytest.raises(UserError, match="'select' is chosen on the dev slice"):
        resolve_mode({"prompt_template": "Q: {question}\nA:"}, "select")

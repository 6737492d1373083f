"""The two recorded SVAMP teachers (ReFT prose and programs) through the real data and teach stages,
and a program's way from a completion to a training target with its lines and indentation."""

from __future__ import annotations

import json

from scalingdown.artifacts import read_json, read_jsonl
from scalingdown.config_file import parse_config
from scalingdown.data.schema import Problem
from scalingdown.data.stage import run_data_stage
from scalingdown.teach.prompts import looks_like_program, rationale_body
from scalingdown.teach.stage import run_teach_stage
from scalingdown.train.examples import build_examples, load_rationales, rationale_text
from tests.conftest import shared_path

SLICE = 200
PROGRAM = (
    "def solution():\n"
    '    """tom has 3 apples . he gets 4 more . how many ?"""\n'
    "    q: int = 3\n"
    "    # the answer is the sum. Question: why?\n"
    "    result = q + 4\n"
    "\n"
    "    return result\n"
)


def test_both_recorded_teachers_over_a_svamp_slice_keep_programs_intact(tmp_path):
    folder = shared_path("svamp_reft")
    files = {"gpt35-prose": "train_nl.json", "gpt35-program": "train_python.json"}
    run = tmp_path / "run"
    study = parse_config(
        {
            "run_dir": str(run),
            "seed": 0,
            "data": {"dataset": "svamp", "path": str(folder), "train_limit": SLICE, "test_limit": 10},
            # A replay teacher never reads its prompt, and SVAMP has no gold worked solutions to show.
            "teachers": [
                {"name": name, "backend": "replay", "model": str(folder / file), "num_examples": 0}
                for name, file in files.items()
            ],
            # 'flag' keeps every rationale, so the program file's rows all reach rationales.jsonl
            # whatever the current answer check makes of code.
            "teach": {"policy": "flag"},
        }
    )
    run_data_stage(study, run)
    summaries = run_teach_stage(study, progress=False)
    train_ids = [p["meta"]["item_id"] for p in read_jsonl(run / "data" / "train.jsonl")]
    assert len(train_ids) == SLICE
    for name, file in files.items():
        recorded = {r["item_id"]: r["answer_cot"] for r in json.loads((folder / file).read_text("utf-8"))}
        expected = [item for item in train_ids if item in recorded]
        rows = read_jsonl(run / "teachers" / name / "rationales.jsonl")
        usage = read_json(run / "teachers" / name / "usage.json")["rationales"]
        summary = summaries[name]
        print(
            f"\n{name}: {len(rows)} rationales for {SLICE} problems, {usage['not_recorded']} not recorded, "
            f"verified {summary['verified']} ({summary['verified_share']:.1%})"
        )
        assert usage["failed"] == 0 and usage["not_recorded"] == SLICE - len(expected)
        assert [r["problem_id"] for r in rows] == [
            "svamp-" + item.removeprefix("svamp_") for item in expected
        ]
        for row, item in zip(rows, expected, strict=True):
            assert row["text"] == recorded[item].strip()  # character for character, programs too
        assert summary["free_accuracy"] is None  # a recorded teacher has no free mode
    programs = read_jsonl(run / "teachers" / "gpt35-program" / "rationales.jsonl")
    assert all(looks_like_program(r["text"]) and "\n    return result" in r["text"] for r in programs)
    assert len(programs) < SLICE  # some problems have prose and no program: not recorded
    # The prose rationales end "Therefore, the answer is <N>." and nearly all state the gold answer.
    assert summaries["gpt35-prose"]["verified_share"] >= 0.9

    # Into training targets: the program's indentation survives.
    problems = [Problem.model_validate(p) for p in read_jsonl(run / "data" / "train.jsonl")]
    rationales = load_rationales(run, ["gpt35-program"], problems=problems, include_unverified=True)
    examples = build_examples(problems, rationales, fmt="multitask")
    targets = {e.problem_id: e.target for e in examples if e.task == "rationale:gpt35-program"}
    first = programs[0]
    assert targets[first["problem_id"]] == " " + first["text"]
    assert "\n    num_" in targets["svamp-0"] and targets["svamp-0"].endswith("\n    return result")


def test_rationale_body_keeps_a_program_whole_and_still_cuts_prose():
    assert looks_like_program(PROGRAM)
    assert rationale_body(f"\n{PROGRAM}\n\n") == PROGRAM.strip()
    assert rationale_body(f"Answer: {PROGRAM}") == PROGRAM.strip()  # the label goes, the code stays
    # The same cuts on prose: after the answer sentence, and before a new question.
    prose = "3 + 4 = 7. The answer is 7. Extra words.\nQuestion: next?"
    assert rationale_body(prose) == "3 + 4 = 7. The answer is 7."
    assert not looks_like_program("from the question, 3 + 4 = 7.")
    assert not looks_like_program("def solution(:\n    return")  # starts like code, does not parse


def test_a_program_target_keeps_its_indentation_and_drops_blank_lines():
    target = rationale_text(PROGRAM)
    assert target == PROGRAM.strip().replace("\n\n", "\n")  # the blank line before `return` goes
    assert "\n    result = q + 4\n    return result" in target

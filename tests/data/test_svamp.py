"""SVAMP loader: the real ReFT files, ids, golds, questions as shipped, the Hub layout, bad files."""

from __future__ import annotations

import json
import re
from fractions import Fraction
from pathlib import Path

import pytest

from scalingdown.config import DataConfig, StudyConfig
from scalingdown.data import sources
from scalingdown.data.answers import parse_number
from scalingdown.data.overlap import normalise
from scalingdown.data.sources import load_data
from scalingdown.data.stage import run_data_stage
from scalingdown.data.svamp import (
    gold_answer,
    iter_json_list,
    load_svamp,
    load_svamp_file,
    problem_from_hub_row,
    problem_id,
)
from scalingdown.errors import UserError
from scalingdown.plan import split_sizes
from tests.conftest import shared_path


@pytest.fixture(scope="module")
def svamp_dir() -> Path:
    return shared_path("svamp_reft")


@pytest.fixture(scope="module")
def raw(svamp_dir: Path) -> dict[str, list[dict]]:
    return {
        split: json.loads((svamp_dir / name).read_text(encoding="utf-8"))
        for split, name in (("train", "train_nl.json"), ("test", "test.json"))
    }


def write_list(path: Path, rows: list) -> Path:
    path.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    return path


ROW = {"item_id": "svamp_1", "question": "tom has 3 apples . how many ?", "answer_value": "3.0"}


def test_real_splits_keep_every_row_as_shipped(svamp_dir: Path, raw: dict) -> None:
    train, test = load_svamp("train", svamp_dir), load_svamp("test", svamp_dir)
    assert (len(train), len(test)) == (3076, 1000) == (len(raw["train"]), len(raw["test"]))
    ids = [p.id for p in (*train, *test)]
    assert len(set(ids)) == len(ids) == 4076
    for split, problems in (("train", train), ("test", test)):
        for problem, row in zip(problems, raw[split], strict=True):
            assert problem.id == "svamp-" + row["item_id"].removeprefix("svamp_")
            assert problem.meta == {"item_id": row["item_id"]}
            assert problem.question == row["question"].strip()  # no case or spacing change
            assert parse_number(problem.answer) == Fraction(row["answer_value"])
            assert problem.split == split and problem.source == "svamp" and problem.rationale is None
    # The challenge set is lower-cased and space-tokenised; train is partly cased: kept as it is.
    attached = re.compile(r"[a-z][.?,!](\s|$)")  # "apples." rather than "apples ."
    assert all(p.question == p.question.lower() and not attached.search(p.question) for p in test)
    cased = [p for p in train if p.question != p.question.lower()]
    assert 0 < len(cased) < len(train)


def test_gold_answers_are_canonical_numbers(svamp_dir: Path) -> None:
    train = {p.id: p for p in load_svamp("train", svamp_dir)}
    assert train["svamp-0"].answer == "203"  # shipped as "203.0"
    assert all(not p.answer.endswith(".0") for p in train.values())
    assert gold_answer("203.0") == "203" and gold_answer("13.1666666667") == "13.1666666667"
    assert gold_answer(14.0) == "14" and gold_answer("-120.0") == "-120" and gold_answer(7) == "7"
    assert gold_answer("abc") is None and gold_answer(None) is None and gold_answer(True) is None


def test_no_test_question_in_train_and_the_data_stage_flags_the_near_copy(svamp_dir: Path, tmp_path) -> None:
    """SVAMP's challenge problems are variations of ASDiv-A problems, so near copies are expected;
    the README says no test question is a train question. The stage must see through the spacing."""
    train, test = load_svamp("train", svamp_dir), load_svamp("test", svamp_dir)
    assert not {normalise(p.question) for p in test} & {normalise(p.question) for p in train}
    study = StudyConfig(run_dir=str(tmp_path), data=DataConfig(dataset="svamp", path=str(svamp_dir)))
    report = run_data_stage(study, tmp_path)
    assert report["counts"] == {"train": 3076, "test": 1000}
    assert report["overlap"]["exact"] == 0
    flagged = {(e["test_id"], e["train_id"]) for e in report["overlap"]["examples"]}
    # The two questions share all but the height and the question: "...he stands at 9 feet how much
    # deeper is the water..." against "...he stands at 6 feet how deep was the water?".
    assert ("svamp-3800", "svamp-1046") in flagged
    assert report["overlap"]["flagged"] == len(flagged) < 10  # a handful, not the data set
    loose = StudyConfig(
        run_dir=str(tmp_path / "loose"),
        data=DataConfig(dataset="svamp", path=str(svamp_dir), overlap_ngram=4),
    )
    assert run_data_stage(loose, tmp_path / "loose")["overlap"]["flagged"] > report["overlap"]["flagged"]


def test_limits_take_the_first_problems_and_ids_do_not_depend_on_order(
    svamp_dir: Path, raw, tmp_path
) -> None:
    full = load_data(DataConfig(dataset="svamp", path=str(svamp_dir)), seed=0)
    cut = load_data(DataConfig(dataset="svamp", path=str(svamp_dir), train_limit=7, test_limit=3), seed=1)
    assert cut.train == full.train[:7] and cut.test == full.test[:3] and cut.source == str(svamp_dir)
    # The same rows in another order (and another folder) keep their ids: ids come from item_id.
    folder = tmp_path / "reversed"
    folder.mkdir()
    write_list(folder / "train_nl.json", raw["train"][:50][::-1])
    write_list(folder / "test.json", raw["test"][:5])
    shuffled = {p.id: p for p in load_data(DataConfig(dataset="svamp", path=str(folder)), seed=0).train}
    assert shuffled == {p.id: p for p in full.train[:50]}


def test_the_train_split_is_the_prose_file_even_beside_the_programs(svamp_dir: Path, raw, tmp_path) -> None:
    """train_python.json holds 20 programs for problems that are in neither split: it is teacher
    output, never problems, and a folder without train_nl.json is an error that says what it found."""
    programs = json.loads((svamp_dir / "train_python.json").read_text(encoding="utf-8"))
    train_ids = {row["item_id"] for row in raw["train"]}
    assert len(programs) == 3043 and sum(row["item_id"] not in train_ids for row in programs) == 20
    folder = tmp_path / "programs-only"
    folder.mkdir()
    write_list(folder / "train_python.json", programs[:3])
    write_list(folder / "test.json", raw["test"][:3])
    with pytest.raises(UserError) as caught:
        load_data(DataConfig(dataset="svamp", path=str(folder)), seed=0)
    message = str(caught.value)
    assert (
        message.startswith(f"{folder}: no train_nl.json") and "found: test.json, train_python.json" in message
    )
    assert "\n" not in message


def test_a_missing_folder_or_a_single_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"^data\.path: .*absent does not exist$"):
        load_data(DataConfig(dataset="svamp", path=str(tmp_path / "absent")), seed=0)
    single = write_list(tmp_path / "train_nl.json", [ROW])
    with pytest.raises(UserError, match=r"^data\.path: .* is a single file"):
        load_data(DataConfig(dataset="svamp", path=str(single)), seed=0)


@pytest.mark.parametrize(
    ("second", "message"),
    [
        ({**ROW, "item_id": "svamp_2", "answer_value": "three"}, "'answer_value' is not a number: 'three'"),
        ({**ROW, "item_id": "svamp_2", "answer_value": None}, "'answer_value' is not a number"),
        ({"item_id": "svamp_2", "answer_value": "1"}, "non-empty text field 'question'"),
        ({**ROW, "item_id": ""}, "non-empty text field 'item_id'"),
        ({**ROW, "question": ["a"]}, "non-empty text field 'question'"),
        ("a row", "expected an object, got str"),
        (ROW, "item_id 'svamp_1' appears twice (first at line 2)"),
    ],
)
def test_a_bad_row_names_the_file_and_its_line(tmp_path: Path, second, message: str) -> None:
    path = write_list(tmp_path / "test.json", [ROW, second])
    # json.dumps(indent=2): "[" on line 1, the first object from line 2 (5 lines), the second at 7.
    with pytest.raises(UserError) as caught:
        load_svamp_file(path, "test")
    assert str(caught.value).startswith(f"{path}:7: ") and message in str(caught.value)


def test_item_lines_follow_the_file_and_broken_json_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text('[\n {"a": 1},\n\n  {"b": "x\\ny"}, {"c": [1,\n 2]},\n {"d": 4}\n]\n', encoding="utf-8")
    assert [line for line, _ in iter_json_list(path)] == [2, 4, 4, 6]
    path.write_text('[\n {"a": 1},\n {"b": }\n]', encoding="utf-8")
    with pytest.raises(UserError, match=re.escape(f"{path}:3: malformed JSON")):
        list(iter_json_list(path))
    path.write_text('{"item_id": "svamp_1"}', encoding="utf-8")
    with pytest.raises(UserError, match="expected a JSON list of objects, got a dict"):
        list(iter_json_list(path))


def test_an_item_in_both_splits_is_an_error(tmp_path: Path) -> None:
    write_list(tmp_path / "train_nl.json", [ROW, {**ROW, "item_id": "svamp_9"}])
    write_list(tmp_path / "test.json", [{**ROW, "item_id": "svamp_9", "question": "other ?"}])
    with pytest.raises(UserError, match=r"^data\.path: SVAMP problem 'svamp-9' is in both the train and"):
        load_data(DataConfig(dataset="svamp", path=str(tmp_path)), seed=0)


HUB_ROW = {
    "ID": "chal-1",
    "Body": "Each pack of dvds costs 76 dollars. If there is a discount of 25 dollars on each pack",
    "Question": "How much do you have to pay to buy each pack?",
    "Equation": "( 76.0 - 25.0 )",
    "Answer": 51.0,
    "Type": "Subtraction",
}


def test_hub_rows_become_problems_through_the_registry(monkeypatch) -> None:
    asked = []

    def fake_rows(hub_id: str, config_name: str, split: str) -> list[dict]:
        asked.append((hub_id, config_name, split))
        if split == "train":
            return [HUB_ROW, {**HUB_ROW, "ID": "chal-2", "Answer": 0.5}]
        return [{**HUB_ROW, "ID": "chal-700", "Body": None}]

    monkeypatch.setattr(sources, "load_hub_rows", fake_rows)
    loaded = load_data(DataConfig(dataset="svamp"), seed=0)
    assert asked == [("ChilleD/SVAMP", "default", "train"), ("ChilleD/SVAMP", "default", "test")]
    first = loaded.train[0]
    assert first.id == "svamp-chal-1" and first.answer == "51" and loaded.train[1].answer == "0.5"
    assert first.question == f"{HUB_ROW['Body']} {HUB_ROW['Question']}"
    assert first.meta == {"ID": "chal-1", "Equation": "( 76.0 - 25.0 )", "Type": "Subtraction"}
    assert loaded.test[0].question == HUB_ROW["Question"]  # a missing body leaves the question alone
    assert loaded.source == "ChilleD/SVAMP" and problem_id("chal-1") == first.id


def test_hub_rows_with_other_columns_name_what_they_found() -> None:
    row = {"question": "q", "answer": "1"}
    with pytest.raises(UserError) as caught:
        problem_from_hub_row(row, split="train", index=0, where="hf://ChilleD/SVAMP/default/train", line=4)
    assert str(caught.value) == (
        "hf://ChilleD/SVAMP/default/train:4: ChilleD/SVAMP row has no column 'ID': "
        "expected ID, Body, Question, Answer, found question, answer"
    )


def test_plan_sizes_follow_the_layout(tmp_path: Path) -> None:
    local = StudyConfig(run_dir=str(tmp_path), data=DataConfig(dataset="svamp", path="/anywhere"))
    hub = StudyConfig(run_dir=str(tmp_path), data=DataConfig(dataset="svamp", train_limit=100))
    assert split_sizes(local) == (3076, 1000) and split_sizes(hub) == (100, 300)

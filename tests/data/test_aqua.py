"""AQuA-RAT loader: the real dev/test files, option parsing, split names, and bad rows."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from scalingdown.data.aqua import load_aqua, load_aqua_file, parse_options
from scalingdown.data.schema import CHOICE_LETTERS
from scalingdown.errors import UserError

GOOD = {
    "question": "What is 2+2?",
    "options": ["A)3", "B)4", "C)5", "D)6", "E)7"],
    "rationale": "2+2=4. Answer B",
    "correct": "B",
}


def write_rows(path: Path, rows: list[object]) -> Path:
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8"
    )
    return path


@pytest.mark.parametrize(("split", "file"), [("dev", "dev.json"), ("test", "test.json")])
def test_real_splits(aqua_dir: Path, split: str, file: str) -> None:
    raw = [json.loads(line) for line in (aqua_dir / file).read_text().splitlines() if line.strip()]
    problems = load_aqua(split, aqua_dir)
    assert len(problems) == 254 == len(raw)
    assert problems[0].id == f"aqua_rat-{split}-00000" and problems[-1].id == f"aqua_rat-{split}-00253"
    for problem, row in zip(problems, raw, strict=True):
        assert problem.source == "aqua_rat" and problem.split == split
        assert list(problem.options) == list(CHOICE_LETTERS)
        assert problem.answer == row["correct"] and problem.answer in problem.options
        # Each option text is what followed "X)" in the source string.
        for (letter, text), source in zip(problem.options.items(), row["options"], strict=True):
            assert source.startswith(f"{letter})") and source[2:].strip() == text
        assert problem.rationale


def test_first_real_dev_row(aqua_dir: Path) -> None:
    first = load_aqua("dev", aqua_dir)[0]
    assert first.options == {"A": "32400", "B": "6000", "C": "600", "D": "60000", "E": "10"}
    assert first.answer == "A"
    assert first.question.startswith("Three birds are flying")


def test_validation_is_the_dev_split(aqua_dir: Path) -> None:
    assert load_aqua("validation", aqua_dir) == load_aqua("dev", aqua_dir)


def test_local_train_split_points_to_the_hub_and_dev(aqua_dir: Path) -> None:
    with pytest.raises(UserError) as caught:
        load_aqua("train", aqua_dir)
    message = str(caught.value)
    assert "97,467" in message and "Hub" in message and "dev" in message
    with pytest.raises(UserError, match="no split 'trian'"):
        load_aqua("trian", aqua_dir)


def test_options_split_on_the_first_parenthesis() -> None:
    options = ["A)(1/2)", "B) 3 (approx)", "C)", "D)x)y", "E)5"]
    assert parse_options(options, where="f", line=1) == {
        "A": "(1/2)",
        "B": "3 (approx)",
        "C": "",
        "D": "x)y",
        "E": "5",
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"options": ["A)3", "B4", "C)5"]}, "'B4'"),
        ({"options": ["A)3", "F)4"]}, "letter 'F'"),
        ({"options": ["A)3", "A)4"]}, "twice"),
        ({"options": "A)3 B)4"}, "list"),
        ({"options": []}, "list"),
        ({"correct": "E", "options": ["A)1", "B)2"]}, "'correct'"),
        ({"correct": None}, "'correct'"),
        ({"question": ""}, "'question'"),
    ],
)
def test_bad_row_names_file_and_line(tmp_path: Path, change: dict, message: str) -> None:
    path = write_rows(tmp_path / "test.json", [GOOD, {**GOOD, **change}])
    with pytest.raises(UserError, match=re.escape(f"{path}:2: ")) as caught:
        load_aqua_file(path, "test")
    assert message in str(caught.value)


def test_missing_options_field_and_missing_path(tmp_path: Path) -> None:
    row = {k: v for k, v in GOOD.items() if k != "options"}
    path = write_rows(tmp_path / "dev.json", ["", row])
    with pytest.raises(UserError, match=re.escape(f"{path}:2: ") + ".*'options'"):
        load_aqua("dev", tmp_path)
    with pytest.raises(UserError, match=re.escape(str(tmp_path / "absent"))):
        load_aqua("test", tmp_path / "absent")

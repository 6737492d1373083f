"""GSM8K loader: the real public files, annotation stripping, gold answers, and bad rows."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from scalingdown.data.gsm8k import load_gsm8k, load_gsm8k_file, strip_calculator_annotations
from scalingdown.errors import UserError


def write_rows(path: Path, rows: list[object]) -> Path:
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8"
    )
    return path


GOOD = {"question": "Tom has 2 apples and buys 3. How many?", "answer": "2+3=<<2+3=5>>5\n#### 5"}


@pytest.mark.parametrize(("split", "count"), [("train", 7473), ("test", 1319)])
def test_real_split_counts_and_ids(gsm8k_dir: Path, split: str, count: int) -> None:
    problems = load_gsm8k(split, gsm8k_dir)
    assert len(problems) == count
    assert [p.id for p in problems[:2]] == [f"gsm8k-{split}-00000", f"gsm8k-{split}-00001"]
    assert problems[-1].id == f"gsm8k-{split}-{count - 1:05d}"
    assert len({p.id for p in problems}) == count
    assert all(p.split == split and p.source == "gsm8k" and p.options is None for p in problems)


def test_real_rows_lose_annotations_but_keep_them_in_meta(gsm8k_dir: Path) -> None:
    raw = [json.loads(line) for line in (gsm8k_dir / "train.jsonl").read_text().splitlines()]
    problems = load_gsm8k("train", gsm8k_dir)
    annotated_rows = [i for i, row in enumerate(raw) if "<<" in row["answer"]]
    assert len(annotated_rows) > 0.9 * len(raw)
    for problem in problems:
        assert "<<" not in problem.rationale and ">>" not in problem.rationale
        assert "####" not in problem.rationale
    for i in annotated_rows:
        annotated = problems[i].meta["annotated_rationale"]
        assert "<<" in annotated
        assert raw[i]["answer"].startswith(annotated)
    # The first public row, checked against its text: the value after each annotation stays.
    first = problems[0]
    assert first.rationale.splitlines()[0] == "Natalia sold 48/2 = 24 clips in May."
    assert (
        first.meta["annotated_rationale"].splitlines()[0] == "Natalia sold 48/2 = <<48/2=24>>24 clips in May."
    )


def test_real_gold_answers_are_numbers_without_commas(gsm8k_dir: Path) -> None:
    for split in ("train", "test"):
        lines = (gsm8k_dir / f"{split}.jsonl").read_text().splitlines()
        finals = [json.loads(line)["answer"].split("####")[-1].strip() for line in lines]
        problems = load_gsm8k(split, gsm8k_dir)
        assert any("," in final for final in finals)  # the real data has "1,000"-style answers
        for problem, final in zip(problems, finals, strict=True):
            assert "," not in problem.answer
            assert float(problem.answer) == float(final.replace(",", ""))
        assert any(p.answer.startswith("-") for p in problems)


def test_strip_annotations_keeps_values_and_separates_neighbours() -> None:
    text = "a = <<3*4=12>>12 and b = <<12/2=6>>6\nc = <<6+1=7>>7"
    assert strip_calculator_annotations(text) == "a = 12 and b = 6\nc = 7"
    assert strip_calculator_annotations("no annotations here") == "no annotations here"


def test_a_single_file_loads_as_the_given_split(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "mine.jsonl", [GOOD, "", {**GOOD, "answer": "Big.\n#### 1,234,567"}])
    problems = load_gsm8k("test", path)
    assert [p.id for p in problems] == ["gsm8k-test-00000", "gsm8k-test-00001"]  # blank line skipped
    assert [p.answer for p in problems] == ["5", "1234567"]
    assert problems[0].rationale == "2+3=5"


@pytest.mark.parametrize(
    ("bad_row", "message"),
    [
        ({"question": "Q?", "answer": "no final line"}, "####"),
        ({"answer": "x\n#### 3"}, "'question'"),
        ({"question": "Q?"}, "'answer'"),
        ({"question": "Q?", "answer": "x\n#### three"}, "not a number"),
        ({"question": 7, "answer": "x\n#### 3"}, "'question'"),
        ("{not json", "malformed JSON"),
        ("[1, 2]", "JSON object"),
    ],
)
def test_bad_row_names_file_and_line(tmp_path: Path, bad_row: object, message: str) -> None:
    path = write_rows(tmp_path / "train.jsonl", [GOOD, GOOD, bad_row])
    with pytest.raises(UserError, match=re.escape(f"{path}:3: ")) as caught:
        load_gsm8k_file(path, "train")
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_folder_without_the_split_file_and_missing_path(tmp_path: Path) -> None:
    write_rows(tmp_path / "train.jsonl", [GOOD])
    with pytest.raises(UserError, match=r"no test\.jsonl .*found: train\.jsonl"):
        load_gsm8k("test", tmp_path)
    missing = tmp_path / "nowhere"
    with pytest.raises(UserError, match=re.escape(str(missing))):
        load_gsm8k("train", missing)

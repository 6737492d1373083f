"""AQuA-RAT (Ling et al., 2017): algebra word problems with five options A-E and a worked rationale.

A source row is `{"question", "options": ["A)32400", ...], "rationale", "correct": "A"}`. It becomes
a `Problem` with `options = {"A": "32400", ...}` (each string split on its first ")"), `answer` the
correct letter, the rationale as written, and `id = aqua_rat-{split}-{index:05d}`.

Splits: the Hub (`deepmind/aqua_rat`, config `raw`) has train (97,467 rows), validation (254) and
test (254). The public local release has `dev.json` and `test.json` (one JSON object a line); there
the validation split is `dev.json`. The split names "validation" and "dev" are one split, called
"dev" in ids and `Problem.split`, so a local row and its Hub twin carry the same id.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from scalingdown.artifacts import iter_jsonl
from scalingdown.data.schema import CHOICE_LETTERS, Problem, problems_from_rows
from scalingdown.errors import UserError

DATASET_NAME = "aqua_rat"
HUB_ID = "deepmind/aqua_rat"
HUB_CONFIG = "raw"
# Our split name -> (Hub split name, local file name).
SPLITS = {"train": ("train", "train.json"), "dev": ("validation", "dev.json"), "test": ("test", "test.json")}
_ALIASES = {"validation": "dev"}
TRAIN_ROWS_ON_HUB = 97_467


def canonical_split(split: str) -> str:
    """'validation' -> 'dev'; other known names unchanged; an unknown name is a `UserError`."""
    name = _ALIASES.get(split, split)
    if name not in SPLITS:
        raise UserError(f"AQuA-RAT has no split {split!r} (known: train, validation or dev, test)")
    return name


def parse_options(options: Any, *, where: str | Path, line: int | None) -> dict[str, str]:
    """`["A)32400", "B)6000", ...]` -> `{"A": "32400", "B": "6000", ...}`, letters A-E, each once."""
    if not isinstance(options, list) or not options:
        raise UserError(
            "AQuA-RAT 'options' must be a non-empty list of strings like 'A)32400'", path=where, line=line
        )
    parsed: dict[str, str] = {}
    for option in options:
        if not isinstance(option, str) or ")" not in option:
            raise UserError(f"AQuA-RAT option {option!r} is not of the form 'A)text'", path=where, line=line)
        letter, text = option.split(")", 1)
        letter = letter.strip().upper()
        if letter not in CHOICE_LETTERS:
            raise UserError(
                f"AQuA-RAT option {option!r} has letter {letter!r}, expected A to E",
                path=where,
                line=line,
            )
        if letter in parsed:
            raise UserError(f"AQuA-RAT option letter {letter!r} appears twice", path=where, line=line)
        parsed[letter] = text.strip()
    return parsed


def problem_from_row(
    row: Mapping[str, Any], *, split: str, index: int, where: str | Path, line: int | None
) -> Problem:
    """One source row -> `Problem`; `where`/`line` locate the row in error messages."""
    question = row.get("question")
    if not isinstance(question, str) or not question.strip():
        raise UserError("AQuA-RAT row lacks a non-empty text field 'question'", path=where, line=line)
    if "options" not in row:
        raise UserError("AQuA-RAT row lacks the field 'options'", path=where, line=line)
    options = parse_options(row["options"], where=where, line=line)
    correct = row.get("correct")
    if not isinstance(correct, str) or correct.strip().upper() not in options:
        raise UserError(
            f"AQuA-RAT 'correct' is {correct!r}, not one of the option letters {', '.join(options)}",
            path=where,
            line=line,
        )
    rationale = row.get("rationale")
    if rationale is not None and not isinstance(rationale, str):
        raise UserError("AQuA-RAT 'rationale' must be text", path=where, line=line)
    return Problem(
        id=f"{DATASET_NAME}-{split}-{index:05d}",
        question=question.strip(),
        options=options,
        answer=correct.strip().upper(),
        rationale=rationale.strip() if rationale and rationale.strip() else None,
        source=DATASET_NAME,
        split=split,
    )


def load_aqua_file(path: str | Path, split: str) -> list[Problem]:
    """Read one AQuA-RAT file (one JSON object a line) as the given split."""
    return problems_from_rows(problem_from_row, iter_jsonl(path), split=canonical_split(split), where=path)


def local_split_file(path: str | Path, split: str) -> Path:
    """The file that holds `split` under a local copy: the path itself if it is a file, else the
    split's file in the folder (`train.json`, `dev.json`, `test.json`)."""
    path = Path(path)
    if not path.exists():
        raise UserError("AQuA-RAT data path does not exist", path=path)
    if path.is_file():
        return path
    name = canonical_split(split)
    candidate = path / SPLITS[name][1]
    if candidate.is_file():
        return candidate
    if name == "train":
        raise UserError(
            f"no train.json in this folder: the {TRAIN_ROWS_ON_HUB:,}-row AQuA-RAT train split is only "
            "on the Hugging Face Hub (set data.path to null to use it); locally, train on the dev split "
            "instead (the data stage does this for a folder without train.json)",
            path=path,
        )
    raise UserError(f"no {candidate.name} for AQuA-RAT split {split!r} in this folder", path=path)


def load_aqua_hub(split: str) -> list[Problem]:
    """Download (or read from the Hugging Face cache) one split of `deepmind/aqua_rat`."""
    from scalingdown.data.sources import hub_problems  # sources imports this module

    name = canonical_split(split)
    return hub_problems(problem_from_row, HUB_ID, HUB_CONFIG, SPLITS[name][0], name)


def load_aqua(split: str, path: str | Path | None = None) -> list[Problem]:
    """One split of AQuA-RAT from a local copy (`path`) or, when `path` is None, from the Hub."""
    if path is None:
        return load_aqua_hub(split)
    return load_aqua_file(local_split_file(path, split), split)

"""SVAMP (Patel et al., 2021): one-step and two-step arithmetic word problems with a numeric answer.

Two layouts of the data set exist, and they are different studies:

- Local (`data.path`, e.g. `../shared/data/svamp_reft`, the files of the ReFT repository): the
  SVAMP paper's own setting. Train is `train_nl.json`, the 3,076 MAWPS + ASDiv-A problems; test is
  `test.json`, the 1,000 SVAMP challenge problems. Both are JSON lists of objects
  `{item_id, question, answer_value}` (train rows also carry `answer_cot`, an LLM's rationale).
  `train_python.json` holds programs for 3,023 of the same problems plus 20 that are in neither
  split: it is recorded teacher output for the `replay` backend, never a source of problems, so the
  train split is `train_nl.json`'s problems whatever else the folder holds.
- Hub (`ChilleD/SVAMP`, no `data.path`): the 1,000 challenge problems alone, cut 700 train / 300
  test, with columns `ID` ("chal-1"), `Body`, `Question`, `Equation`, `Answer` (a float), `Type`.
  Its train problems are challenge problems, so none of the ReFT recorded rationales answers them,
  and its test split is a 300-problem part of the local test split: figures from the two layouts
  are not comparable.

Questions are kept exactly as shipped (only the ends stripped). In the local files they are
tokenised with spaces (" . ", " ?", "$ 14.28"); all 1,000 test questions and 1,190 of the 3,076
train questions are lower-cased, the other train questions keep their source's capitals. Keeping
them so means a question reads to a model the way it read to the teachers whose rationales are
recorded for it, and a replay teacher finds it by its exact text. The overlap check of the data
stage normalises case and punctuation itself, so it sees through the spacing.

A `Problem` gets:
- `id`: `svamp-<n>` for the ReFT `item_id` `svamp_<n>` (`problem_id`), `svamp-<ID>` for a Hub row
  (`svamp-chal-1`): stable across limits and file order, and the key a replay teacher maps by;
- `answer`: the gold number in canonical form ("203.0" -> "203", "0.5" stays "0.5"; `format_number`),
  compared by value with model answers like every numeric data set;
- `rationale`: None. SVAMP has no human worked solutions; the ReFT rationales are an LLM's, and they
  reach students only through the replay teachers, the way a real teacher's would;
- `meta`: `item_id` (local) or `ID`, `Equation`, `Type` (Hub).

A malformed file or row raises `UserError` naming the file and line (or the Hub split and row).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from scalingdown.artifacts import read_text
from scalingdown.data.answers import format_number, parse_number
from scalingdown.data.schema import Problem
from scalingdown.errors import UserError

DATASET_NAME = "svamp"
HUB_ID = "ChilleD/SVAMP"
HUB_CONFIG = "default"
HUB_COLUMNS = ("ID", "Body", "Question", "Answer")
SPLITS = ("train", "test")
# The local (ReFT) layout: split -> file. train_python.json is recorded teacher output, not problems.
LOCAL_FILES = {"train": "train_nl.json", "test": "test.json"}
REFT_ITEM_PREFIX = "svamp_"


def problem_id(item_id: str) -> str:
    """The problem id of a ReFT `item_id`: "svamp_17" -> "svamp-17"; any other id gets the prefix
    "svamp-" ("chal-1" -> "svamp-chal-1"). The replay backend maps ReFT rows through this."""
    return f"{DATASET_NAME}-{item_id.removeprefix(REFT_ITEM_PREFIX)}"


def gold_answer(value: Any) -> str | None:
    """`answer_value` ("203.0", "13.1666666667") or a Hub float as canonical text, or None if not a number."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    number = parse_number(value if isinstance(value, str) else repr(value))
    return None if number is None else format_number(number)


def iter_json_list(path: str | Path) -> Iterator[tuple[int, Any]]:
    """(line, item) for each item of a file holding one JSON list; `line` is where the item starts,
    so a bad row is named file:line like a JSONL row. Malformed JSON is a `UserError` at its line."""
    raw = read_text(path, what="SVAMP file")
    try:
        items = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise UserError(f"malformed JSON ({exc.msg})", path=path, line=exc.lineno) from None
    if not isinstance(items, list):
        raise UserError(f"expected a JSON list of objects, got a {type(items).__name__}", path=path)
    # The file parsed, so walking it item by item with raw_decode cannot fail; it only finds the
    # offset where each item begins, and the line is counted incrementally from there.
    decoder = json.JSONDecoder()
    position = raw.index("[") + 1
    line, counted = 1, 0
    for item in items:
        while raw[position] in " \t\r\n,":
            position += 1
        line += raw.count("\n", counted, position)
        counted = position
        position = decoder.raw_decode(raw, position)[1]
        yield line, item


def _text(row: Mapping[str, Any], field: str, *, where: str | Path, line: int | None) -> str:
    value = row.get(field)
    if not isinstance(value, str) or not value.strip():
        raise UserError(f"SVAMP row lacks a non-empty text field {field!r}", path=where, line=line)
    return value.strip()


def _gold(row: Mapping[str, Any], field: str, *, where: str | Path, line: int | None) -> str:
    gold = gold_answer(row.get(field))
    if gold is None:
        raise UserError(f"SVAMP {field!r} is not a number: {row.get(field)!r}", path=where, line=line)
    return gold


def problem_from_row(
    row: Mapping[str, Any], *, split: str, index: int, where: str | Path, line: int | None
) -> Problem:
    """One ReFT row `{item_id, question, answer_value, ...}` -> `Problem`."""
    if not isinstance(row, Mapping):
        raise UserError(f"expected an object, got {type(row).__name__}", path=where, line=line)
    item_id = _text(row, "item_id", where=where, line=line)
    return Problem(
        id=problem_id(item_id),
        question=_text(row, "question", where=where, line=line),
        answer=_gold(row, "answer_value", where=where, line=line),
        source=DATASET_NAME,
        split=split,
        meta={"item_id": item_id},
    )


def problem_from_hub_row(
    row: Mapping[str, Any], *, split: str, index: int, where: str | Path, line: int | None
) -> Problem:
    """One `ChilleD/SVAMP` row -> `Problem`; the question is `Body` and `Question` joined by a space."""
    missing = [column for column in HUB_COLUMNS if column not in row]
    if missing:
        raise UserError(
            f"{HUB_ID} row has no column {missing[0]!r}: expected {', '.join(HUB_COLUMNS)}, "
            f"found {', '.join(map(str, row)) or 'none'}",
            path=where,
            line=line,
        )
    body = row["Body"].strip() if isinstance(row["Body"], str) else ""
    question = _text(row, "Question", where=where, line=line)
    return Problem(
        id=problem_id(_text(row, "ID", where=where, line=line)),
        question=f"{body} {question}" if body else question,
        answer=_gold(row, "Answer", where=where, line=line),
        source=DATASET_NAME,
        split=split,
        meta={key: row[key] for key in ("ID", "Equation", "Type") if isinstance(row.get(key), str)},
    )


def load_svamp_file(path: str | Path, split: str) -> list[Problem]:
    """Read one ReFT file (a JSON list) as the given split; an `item_id` seen twice is a `UserError`
    at its second line (ids must name one problem each, or a replay teacher could not map by them)."""
    problems: list[Problem] = []
    first_line: dict[str, int] = {}
    for index, (line, row) in enumerate(iter_json_list(path)):
        problem = problem_from_row(row, split=split, index=index, where=path, line=line)
        if problem.id in first_line:
            raise UserError(
                f"SVAMP item_id {problem.meta['item_id']!r} appears twice (first at line "
                f"{first_line[problem.id]})",
                path=path,
                line=line,
            )
        first_line[problem.id] = line
        problems.append(problem)
    return problems


def local_split_file(folder: str | Path, split: str) -> Path:
    """The file holding `split` in a local (ReFT) copy: `train_nl.json` or `test.json`."""
    if split not in LOCAL_FILES:
        raise UserError(f"SVAMP has no split {split!r} (known: {', '.join(SPLITS)})")
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(
            "SVAMP data path is not a folder" if folder.exists() else "SVAMP data path does not exist",
            path=folder,
        )
    candidate = folder / LOCAL_FILES[split]
    if not candidate.is_file():
        found = ", ".join(sorted(p.name for p in folder.glob("*.json"))) or "no .json files"
        raise UserError(
            f"no {candidate.name} for SVAMP split {split!r} in this folder (found: {found}); "
            "expected the ReFT layout: train_nl.json and test.json",
            path=folder,
        )
    return candidate


def load_svamp_hub(split: str) -> list[Problem]:
    """Download (or read from the Hugging Face cache) one split of `ChilleD/SVAMP` (700 / 300)."""
    if split not in SPLITS:
        raise UserError(f"SVAMP has no split {split!r} on the Hub (known: {', '.join(SPLITS)})")
    from scalingdown.data.sources import hub_problems  # sources imports this module

    return hub_problems(problem_from_hub_row, HUB_ID, HUB_CONFIG, split, split)


def load_svamp(split: str, path: str | Path | None = None) -> list[Problem]:
    """One split of SVAMP from a local ReFT folder (`path`) or, when `path` is None, from the Hub."""
    if path is None:
        return load_svamp_hub(split)
    return load_svamp_file(local_split_file(path, split), split)

"""GSM8K (Cobbe et al., 2021): grade-school math word problems with a numeric answer.

A source row is `{"question": ..., "answer": ...}` where `answer` is a human worked solution with
calculator annotations (`48/2 = <<48/2=24>>24`) and a last line `#### 72`. It becomes a `Problem`:

- `answer`: the number after `####`, thousands separators removed ("1,000" -> "1000");
- `rationale`: the solution without annotations and without the `####` line (the text students learn);
- `meta["annotated_rationale"]`: the same solution with its annotations, as the source wrote it;
- `id`: `gsm8k-{split}-{index:05d}`, index counting rows of the split from 0.

Rows come from the Hugging Face Hub (`openai/gsm8k`, config `main`, splits train/test) or from a
local copy: one JSONL file, or a folder holding `{split}.jsonl` (the layout of the public release).
A malformed row raises `UserError` naming the file and line (or the Hub split and row).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from scalingdown.artifacts import iter_jsonl
from scalingdown.data.schema import Problem, problems_from_rows
from scalingdown.errors import UserError

DATASET_NAME = "gsm8k"
HUB_ID = "openai/gsm8k"
HUB_CONFIG = "main"
SPLITS = ("train", "test")

# Non-greedy and single-line: an annotation never spans lines, and two on one line stay separate.
_ANNOTATION = re.compile(r"<<[^\n]*?>>")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def strip_calculator_annotations(text: str) -> str:
    """Remove every `<<expr=value>>` annotation; the value written after it stays in the text."""
    return _ANNOTATION.sub("", text)


def parse_gold_answer(text: str) -> str | None:
    """The number after the last `####` with commas removed, or None if there is no number there."""
    if "####" not in text:
        return None
    value = text.rsplit("####", 1)[1].strip().replace(",", "")
    return value if _NUMBER.fullmatch(value) else None


def problem_from_row(
    row: Mapping[str, Any], *, split: str, index: int, where: str | Path, line: int | None
) -> Problem:
    """One source row -> `Problem`; `where`/`line` locate the row in error messages."""
    for field in ("question", "answer"):
        value = row.get(field)
        if not isinstance(value, str) or not value.strip():
            raise UserError(f"GSM8K row lacks a non-empty text field {field!r}", path=where, line=line)
    solution: str = row["answer"]
    if "####" not in solution:
        raise UserError("GSM8K answer has no '#### <number>' final line", path=where, line=line)
    gold = parse_gold_answer(solution)
    if gold is None:
        final = solution.rsplit("####", 1)[1].strip()
        raise UserError(f"GSM8K answer after '####' is not a number: {final!r}", path=where, line=line)
    annotated = solution.rsplit("####", 1)[0].strip()
    return Problem(
        id=f"{DATASET_NAME}-{split}-{index:05d}",
        question=row["question"].strip(),
        answer=gold,
        rationale=strip_calculator_annotations(annotated).strip(),
        source=DATASET_NAME,
        split=split,
        meta={"annotated_rationale": annotated},
    )


def load_gsm8k_file(path: str | Path, split: str) -> list[Problem]:
    """Read one GSM8K JSONL file as the given split."""
    return problems_from_rows(problem_from_row, iter_jsonl(path), split=split, where=path)


def local_split_file(path: str | Path, split: str) -> Path:
    """The file holding `split` in a local copy: the path itself if it is a file, else `{split}.jsonl`."""
    path = Path(path)
    if not path.exists():
        raise UserError("GSM8K data path does not exist", path=path)
    if path.is_file():
        return path
    candidate = path / f"{split}.jsonl"
    if not candidate.is_file():
        found = ", ".join(sorted(p.name for p in path.glob("*.jsonl"))) or "no .jsonl files"
        raise UserError(
            f"no {split}.jsonl for GSM8K split {split!r} in this folder (found: {found})", path=path
        )
    return candidate


def load_gsm8k_hub(split: str) -> list[Problem]:
    """Download (or read from the Hugging Face cache) one split of `openai/gsm8k`."""
    if split not in SPLITS:
        raise UserError(f"GSM8K has no split {split!r} on the Hub (known: {', '.join(SPLITS)})")
    from scalingdown.data.sources import hub_problems  # sources imports this module

    return hub_problems(problem_from_row, HUB_ID, HUB_CONFIG, split, split)


def load_gsm8k(split: str, path: str | Path | None = None) -> list[Problem]:
    """One split of GSM8K from a local copy (`path`) or, when `path` is None, from the Hub."""
    if path is None:
        return load_gsm8k_hub(split)
    return load_gsm8k_file(local_split_file(path, split), split)

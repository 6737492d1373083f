"""The one `Problem` schema every stage reads and writes (`data/{train,test}.jsonl`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from scalingdown.artifacts import iter_jsonl, write_jsonl
from scalingdown.errors import UserError

CHOICE_LETTERS = ("A", "B", "C", "D", "E")


class Problem(BaseModel):
    """One task item. `answer` is the gold answer as text: a number ("72", "-3.5") or a letter ("C")."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(description="Stable identifier, unique within a data set, e.g. 'gsm8k-test-00017'.")
    question: str = Field(description="The problem statement, without options.")
    options: dict[str, str] | None = Field(
        default=None, description="Multiple-choice options, letter -> text (AQuA-RAT); None for numeric."
    )
    answer: str = Field(description="Gold answer: a number for numeric tasks, a letter for multiple choice.")
    rationale: str | None = Field(
        default=None, description="Gold worked solution as plain text (calculator annotations stripped)."
    )
    source: str = Field(description="Data set name: 'gsm8k', 'aqua_rat', 'svamp' or 'synthetic'.")
    split: str = Field(description="'train' or 'test' (or the source's own split name).")
    meta: dict[str, Any] = Field(
        default_factory=dict, description="Source-specific extras, e.g. the annotated GSM8K rationale."
    )

    @property
    def is_choice(self) -> bool:
        return self.options is not None


def format_validation_error(exc: ValidationError) -> str:
    """One line from a pydantic error: `key.path: message` for the first problem, plus a count."""
    errors = exc.errors()
    first = errors[0]
    parts: list[str] = []
    for item in first["loc"]:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + str(item))
    key = "".join(parts) or "(top level)"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{key}: {first['msg']}{more}"


def read_problems(path: str | Path) -> list[Problem]:
    """Read a `Problem` JSONL file; a bad line raises `UserError` naming the file, line and field."""
    problems = []
    for number, obj in iter_jsonl(path):
        try:
            problems.append(Problem.model_validate(obj))
        except ValidationError as exc:
            raise UserError(format_validation_error(exc), path=path, line=number) from None
    return problems


def write_problems(path: str | Path, problems: Iterable[Problem]) -> int:
    return write_jsonl(path, problems)


def problems_from_rows(
    convert: Callable[..., Problem],
    rows: Iterable[tuple[int | None, Mapping[str, Any]]],
    *,
    split: str,
    where: str | Path,
) -> list[Problem]:
    """Convert `(line, row)` pairs in order with a loader's `convert(row, split=, index=, where=, line=)`;
    the index in each id counts rows, not lines."""
    return [
        convert(row, split=split, index=index, where=where, line=line)
        for index, (line, row) in enumerate(rows)
    ]

"""The `replay` teacher backend: rationales read from a file instead of written by a model.

A replay teacher stands in for a model whose outputs were gathered elsewhere (an earlier run, a
published set of LLM rationales such as `../shared/data/teacher_samples/`). The file is `model` in
the teacher's config; its format is recognised from its first character:

- `[`: a JSON list of objects `{"instruction": question, "output": rationale, "answer": ...}`
  (the Alpaca-style layout of the teacher samples; a non-empty `"input"` is appended to the
  question on a new line, as Alpaca prompts do), or of objects `{"item_id", "question",
  "answer_cot", "answer_value"}` (the ReFT layout, below);
- otherwise JSON Lines, one object a line: `{"id": ..., "text": ...}` or `{"question": ..., "text": ...}`.

The ReFT layout (`../shared/data/svamp_reft/train_nl.json` and `train_python.json`, a row is one
with an `answer_cot`) is recorded teacher output in two styles, prose and program: two teachers,
`gpt35-prose` and `gpt35-program`, one file each. The rationale is `answer_cot`, as written: a
program (`def solution(): ... return result`) keeps its lines and indentation. A row names its
problem by `item_id`: the ReFT SVAMP ids (`svamp_17`) become the SVAMP loader's problem ids
(`svamp-17`, `scalingdown.data.svamp.problem_id`), other item_ids stay as written; `answer_value`
is not read (the gold answer is the problem's). Each item is recorded once, so an `item_id` seen
twice is an error naming both items. A problem of the local SVAMP loader (`svamp-<n>`) is found by
its id only: its number is its item_id, so a row under another item_id is another problem even
where the question reads the same (11 questions of `train_nl.json` appear under two or three
item_ids), and a problem without a row is "not recorded" (53 of the 3,076 train problems have no
program). Problems of other loaders (the Hub's `svamp-chal-<n>`, GSM8K) fall back to the question.

In either format the rationale may be under `text`, `output` or `rationale`, the question under
`question` or `instruction`, and the problem id under `id` or `problem_id`; each row needs a
rationale field and an id or a question. A mistake raises `UserError` naming the file and line
(JSON Lines) or the file and item index (JSON list). An empty rationale is no mistake but what the
teacher wrote (the teacher samples hold three): it is skipped, and a request whose rows are all
empty fails with "empty rationale for this question in FILE (item 83)", like an empty completion.

Requests find their rows through `Request.meta`, not the prompt (the prompt is the teacher's, the
file does not know it): by `meta["problem_id"]` when a row has that id, else by `meta["question"]`
normalised (lowercase, runs of whitespace made one space, ends stripped). Several rows for one
problem give several texts, in file order, at most `params.n` of them; fewer rows than n give
fewer texts (the teach stage asked for n samples; the file holds what it holds). A request with no
row gets the error "no rationale for this question in FILE". Sampling parameters other than n are
ignored: the texts were written already.

Rationales are stripped of surrounding whitespace and of a leading answer label ("A:" or
"Answer:"), which belongs to the prompt the rows were written after, not to the reasoning.

Token counts are 0: the file holds no tokenizer's counts, and whitespace word counts are not tokens
(costs and token totals of a replay teacher are therefore reported as zero, which they are).

`model` (part of the cache key) is the file path followed by a hash of the file's bytes, so an
edited file never answers from a stale cache.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from scalingdown.artifacts import iter_jsonl, read_text
from scalingdown.data import svamp
from scalingdown.errors import UserError
from scalingdown.teach.backend import (
    OnResult,
    Request,
    Result,
    SamplingParams,
    TeacherBackend,
    register_backend,
    validate_options,
)

TEXT_FIELDS = ("text", "output", "rationale")
QUESTION_FIELDS = ("question", "instruction")
ID_FIELDS = ("id", "problem_id")
REFT_TEXT, REFT_ID = "answer_cot", "item_id"
_ANSWER_LABEL = re.compile(r"^(?:A|Answer)\s*:\s*")
_SVAMP_LOCAL_ID = re.compile(rf"{svamp.DATASET_NAME}-\d+")
_WHITESPACE = re.compile(r"\s+")


def normalize_question(text: str) -> str:
    """Lowercase, whitespace runs collapsed to one space, ends stripped: the key questions match on."""
    return _WHITESPACE.sub(" ", text).strip().lower()


def clean_rationale(text: str) -> str:
    """Strip surrounding whitespace and a leading "A:" / "Answer:" label."""
    return _ANSWER_LABEL.sub("", text.strip(), count=1).strip()


class ReplayOptions(BaseModel):
    """Options of the `replay` backend."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: str = Field(
        description="The file of rationales: a JSON list of {instruction, output} or of ReFT rows "
        "{item_id, question, answer_cot}, or JSONL of {id or question, text}."
    )


@dataclass
class ReplayRow:
    """One rationale of the file, with the id and/or question it answers."""

    text: str
    problem_id: str | None = None
    question: str | None = None
    where: str = ""  # "line 7" or "item 3", for messages
    item_id: str | None = None  # a ReFT row's item_id as written: one row per item


@dataclass
class ReplayIndex:
    """The rows of a file, found by problem id or by normalised question."""

    rows: list[ReplayRow] = field(default_factory=list)
    by_id: dict[str, list[ReplayRow]] = field(default_factory=dict)
    by_question: dict[str, list[ReplayRow]] = field(default_factory=dict)
    by_item: dict[str, ReplayRow] = field(default_factory=dict)

    def add(self, row: ReplayRow) -> None:
        if row.item_id is not None:
            if row.item_id in self.by_item:
                first = self.by_item[row.item_id].where
                raise _BadRow(f"item_id {row.item_id!r} appears twice (first at {first})")
            self.by_item[row.item_id] = row
        self.rows.append(row)
        if row.problem_id is not None:
            self.by_id.setdefault(row.problem_id, []).append(row)
        if row.question is not None:
            self.by_question.setdefault(normalize_question(row.question), []).append(row)

    def find(self, meta: Mapping[str, Any]) -> list[ReplayRow]:
        """The rows for a request's meta: by `problem_id` first, else by `question`."""
        problem_id = meta.get("problem_id")
        if problem_id is not None and str(problem_id) in self.by_id:
            return self.by_id[str(problem_id)]
        question = meta.get("question")
        if not isinstance(question, str):
            return []
        rows = self.by_question.get(normalize_question(question), [])
        if problem_id is not None and _SVAMP_LOCAL_ID.fullmatch(str(problem_id)):
            # A local SVAMP problem's id is its item_id: a ReFT row of another item is another problem.
            rows = [row for row in rows if row.item_id is None]
        return rows


class _BadRow(ValueError):
    """A row the reader cannot use; the reader adds the file and line (or item) to the message."""


def _first_string(row: Mapping[str, Any], names: Sequence[str]) -> str | None:
    for name in names:
        value = row.get(name)
        if value is None:
            continue
        if name in (*ID_FIELDS, REFT_ID) and isinstance(value, int) and not isinstance(value, bool):
            return str(value)  # numeric ids are ids too
        if not isinstance(value, str):
            raise _BadRow(f"field {name!r} should be a string, got {type(value).__name__}")
        return value
    return None


def _row(obj: Any, where: str) -> ReplayRow:
    """One object of the file -> `ReplayRow`, or `_BadRow` saying what is wrong with it."""
    if not isinstance(obj, dict):
        raise _BadRow(f"expected an object, got {type(obj).__name__}")
    if REFT_TEXT in obj:
        return _reft_row(obj, where)
    text = _first_string(obj, TEXT_FIELDS)
    if text is None:  # an empty text is kept: the teacher wrote nothing, which is an outcome
        raise _BadRow(f"no rationale: expected a {' or '.join(map(repr, TEXT_FIELDS))} field")
    question = _first_string(obj, QUESTION_FIELDS)
    extra = obj.get("input")
    if question is not None and isinstance(extra, str) and extra.strip():
        question = f"{question}\n{extra}"
    if question is not None and not question.strip():
        question = None
    problem_id = _first_string(obj, ID_FIELDS)
    if problem_id is None and question is None:
        raise _BadRow(
            f"cannot match this row to a problem: expected {' or '.join(map(repr, ID_FIELDS))} "
            f"or {' or '.join(map(repr, QUESTION_FIELDS))}"
        )
    return ReplayRow(clean_rationale(text), problem_id, question, where)


def _reft_row(obj: Mapping[str, Any], where: str) -> ReplayRow:
    """A ReFT row: `answer_cot` as the text, `item_id` mapped to a problem id, the question kept."""
    text = _first_string(obj, (REFT_TEXT,))
    item_id = _first_string(obj, (REFT_ID,))
    if text is None:
        raise _BadRow(f"field {REFT_TEXT!r} should be a string, got null")
    if item_id is None or not item_id.strip():
        raise _BadRow(f"a row with {REFT_TEXT!r} needs a non-empty {REFT_ID!r}")
    question = _first_string(obj, ("question",))
    problem_id = svamp.problem_id(item_id) if item_id.startswith(svamp.REFT_ITEM_PREFIX) else item_id
    question = question if question and question.strip() else None
    return ReplayRow(clean_rationale(text), problem_id, question, where, item_id=item_id)


def read_replay_file(path: str | Path) -> ReplayIndex:
    """Read and index a replay file (format from its first character; see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise UserError("no such replay file" if not path.exists() else "not a file", path=path)
    raw = read_text(path, what="replay file")
    index = ReplayIndex()
    if raw.lstrip().startswith("["):
        try:
            items = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise UserError(f"malformed JSON ({exc.msg})", path=path, line=exc.lineno) from None
        if not isinstance(items, list):  # "[1] x" and the like
            raise UserError("expected a JSON list of objects", path=path)
        for i, obj in enumerate(items):
            try:
                index.add(_row(obj, f"item {i}"))
            except _BadRow as exc:
                raise UserError(f"item {i}: {exc}", path=path) from None
    else:
        for number, obj in iter_jsonl(path):
            try:
                index.add(_row(obj, f"line {number}"))
            except _BadRow as exc:
                raise UserError(str(exc), path=path, line=number) from None
    if not index.rows:
        raise UserError("the replay file holds no rationales", path=path)
    return index


@register_backend("replay")
class ReplayBackend(TeacherBackend):
    """Rationales from a file, matched to requests by problem id or question (module docstring)."""

    Options = ReplayOptions
    answers_new_questions = False

    def __init__(self, options: ReplayOptions | dict):
        self.options = validate_options(ReplayOptions, options)
        self.path = Path(self.options.model)
        # Read now: a bad file is a config mistake and should stop the run before any work.
        self.index = read_replay_file(self.path)
        digest = hashlib.sha256(self.path.read_bytes()).hexdigest()[:16]
        self.model = f"{self.options.model}@sha256:{digest}"

    def __repr__(self) -> str:
        return f"ReplayBackend(model={self.options.model!r}, rows={len(self.index.rows)})"

    def generate(
        self, requests: Sequence[Request], params: SamplingParams, *, on_result: OnResult | None = None
    ) -> list[Result]:
        results = []
        for request in requests:
            rows = self.index.find(request.meta)
            texts = [row.text for row in rows if row.text]
            if texts:
                result = Result(request.key, texts=texts[: params.n])
            elif rows:
                where = ", ".join(row.where for row in rows)
                result = Result(
                    request.key,
                    error=f"empty rationale for this question in {self.path} ({where})",
                    not_recorded=True,
                )
            else:
                result = Result(
                    request.key, error=f"no rationale for this question in {self.path}", not_recorded=True
                )
            if on_result is not None:
                on_result(result)
            results.append(result)
        return results

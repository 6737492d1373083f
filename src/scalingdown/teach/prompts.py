"""Teacher prompts in the TinyLLM manner: in-context worked examples, then the question.

- `ExampleSelector` picks k worked examples from the train split for each question: seeded "random"
  or the most similar questions by "tfidf" (cosine of TF-IDF vectors), never the question itself.
- `build_teacher_prompt` fills a template. *Teacher-forcing* (TinyLLM) gives the question, its options
  and the gold answer and asks for the reasoning that leads to it; *free* asks the same without the
  answer, to measure the teacher's own accuracy. Both ask to end with "The answer is X.", the sentence
  that answer extraction and the students' training format rely on.
- `as_chat` wraps a prompt for chat models; `rationale_body` cuts a completion down to what a student
  learns from (a Python program, `looks_like_program`, is kept whole: lines and indentation).

Template fields (Python `str.format`; write `{{` and `}}` for literal braces):
  {examples}  the worked examples, each followed by a blank line ("" when there are none);
  {question}  the question text;
  {options}   for multiple choice "\\nOptions: A) ... E) ..." (with its leading newline), else "";
  {answer}    the gold answer ("72", "C"); teacher-forcing only.

The frame is the evaluation prompts' "Question: ...\\nAnswer:", so a teacher's examples look like the
few-shot prompts of `scalingdown.evaluate.prompts`. Teacher-forcing examples show the given answer and
then "Reasoning:", which is where the teacher's completion starts.
"""

from __future__ import annotations

import ast
import math
import random
import re
import string
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from scalingdown.data.schema import Problem
from scalingdown.errors import UserError
from scalingdown.evaluate.prompts import question_block, worked_solution

MODES = ("teacher-forcing", "free")
SELECTION_METHODS = ("random", "tfidf")
TEMPLATE_FIELDS = ("examples", "question", "options", "answer")

SYSTEM_PROMPT = (
    "You are a careful math teacher. You explain how to solve math problems step by step, check every "
    'calculation, and end with "The answer is X." where X is the final answer.'
)
TEACHER_FORCING_TEMPLATE = (
    "Each math problem below comes with its correct answer. Explain step by step the reasoning that "
    'leads to that answer, then end with "The answer is X." where X is the answer.\n\n'
    "{examples}Question: {question}{options}\nAnswer: {answer}\nReasoning:"
)
FREE_TEMPLATE = (
    'Solve each math problem below step by step, then end with "The answer is X." where X is the answer.\n\n'
    "{examples}Question: {question}{options}\nAnswer:"
)


def normalised_question(text: str) -> str:
    """Case-folded, whitespace collapsed: two questions that only differ in these are the same."""
    return " ".join(text.split()).casefold()


# ---- in-context examples

_TERM = re.compile(r"[^\W\d_]+|\d+(?:\.\d+)?")


def _terms(text: str) -> Counter[str]:
    return Counter(_TERM.findall(text.casefold()))


class _TfidfIndex:
    """Sparse TF-IDF vectors of the pool's questions as an inverted index (term -> docs, weights).

    Weights are (1 + log tf) * idf, idf = log((1 + N) / (1 + df)) + 1, each document L2-normalised;
    a query's scores against all N documents are its cosine similarities, shape (N,).
    """

    def __init__(self, texts: Sequence[str]):
        self.size = len(texts)
        counts = [_terms(text) for text in texts]
        vocabulary: dict[str, int] = {}
        term_ids, doc_ids, tfs = [], [], []
        for doc, terms in enumerate(counts):
            for term, count in terms.items():
                term_ids.append(vocabulary.setdefault(term, len(vocabulary)))
                doc_ids.append(doc)
                tfs.append(1.0 + math.log(count))
        self.vocabulary = vocabulary
        term_arr, doc_arr = np.asarray(term_ids, dtype=np.int64), np.asarray(doc_ids, dtype=np.int64)
        df = np.bincount(term_arr, minlength=len(vocabulary))
        self.idf = np.log((1 + self.size) / (1 + df)) + 1.0
        weights = np.asarray(tfs) * self.idf[term_arr]
        norms = np.sqrt(np.bincount(doc_arr, weights=weights**2, minlength=self.size))
        weights /= np.where(norms > 0, norms, 1.0)[doc_arr]
        order = np.argsort(term_arr, kind="stable")
        bounds = np.searchsorted(term_arr[order], np.arange(len(vocabulary) + 1))
        self._docs, self._weights, self._bounds = doc_arr[order], weights[order], bounds

    def scores(self, text: str) -> np.ndarray:
        """Cosine similarity of `text` to every pool question, shape (N,)."""
        scores = np.zeros(self.size)
        for term, count in _terms(text).items():
            column = self.vocabulary.get(term)
            if column is None:
                continue
            lo, hi = self._bounds[column], self._bounds[column + 1]
            # Each document appears once in a term's postings, so fancy-index += adds correctly.
            scores[self._docs[lo:hi]] += (1.0 + math.log(count)) * self.idf[column] * self._weights[lo:hi]
        return scores


class ExampleSelector:
    """Picks k worked examples for a question from a pool (the train split), built once.

    Only pool problems with a rationale are candidates, and never the question itself: neither a
    problem with its id nor one with the same normalised question text. "random" draws with a
    generator seeded by (seed, problem id), so a problem gets the same examples whatever order the
    problems are asked in; "tfidf" returns the most similar questions, most similar first (ties by
    pool order).
    """

    def __init__(self, pool: Sequence[Problem], *, method: str = "random", seed: int = 0, where: str = ""):
        self.where = f"{where}." if where else ""
        if method not in SELECTION_METHODS:
            raise UserError(f"{self.where}example_selection: {method!r} is not one of 'random', 'tfidf'")
        self.method, self.seed = method, seed
        self.pool = [p for p in pool if p.rationale and p.rationale.strip()]
        self._by_id: dict[str, list[int]] = {}
        self._by_text: dict[str, list[int]] = {}
        for index, problem in enumerate(self.pool):
            self._by_id.setdefault(problem.id, []).append(index)
            self._by_text.setdefault(normalised_question(problem.question), []).append(index)
        self._index = _TfidfIndex([p.question for p in self.pool]) if method == "tfidf" else None

    def _excluded(self, problem: Problem) -> set[int]:
        return {
            *self._by_id.get(problem.id, ()),
            *self._by_text.get(normalised_question(problem.question), ()),
        }

    def select(self, problem: Problem, k: int) -> list[Problem]:
        """k worked examples for `problem` (see the class notes); a pool too small is a `UserError`."""
        if k <= 0:
            return []
        excluded = self._excluded(problem)
        available = len(self.pool) - len(excluded)
        if k > available:
            raise UserError(
                f"{self.where}num_examples: {k} worked examples asked for, but the train split has only "
                f"{available} other problems with a rationale"
            )
        if self._index is None:
            rng = random.Random(f"examples:{self.seed}:{problem.id}")
            drawn = rng.sample(range(len(self.pool)), k + len(excluded))
            chosen = [i for i in drawn if i not in excluded][:k]
        else:
            scores = self._index.scores(problem.question)
            scores[list(excluded)] = -np.inf
            # The k best without sorting all N: every score tied with the k-th best, then sorted by
            # (score descending, pool order), so ties resolve the same way on every machine.
            kth = np.partition(scores, len(scores) - k)[len(scores) - k]
            candidates = np.flatnonzero(scores >= kth)
            chosen = candidates[np.lexsort((candidates, -scores[candidates]))][:k].tolist()
        return [self.pool[i] for i in chosen]


# ---- prompts


@lru_cache(maxsize=64)
def _fields(template: str, where: str) -> frozenset[str]:
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise UserError(
            f"{where}: invalid template ({exc}); write {{{{ and }}}} for literal braces"
        ) from None
    fields = set()
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in TEMPLATE_FIELDS:
            known = ", ".join("{" + f + "}" for f in TEMPLATE_FIELDS)
            raise UserError(f"{where}: unknown template field {{{name}}} (known: {known})")
        if spec or conversion:
            raise UserError(f"{where}: the template field {{{name}}} takes no conversion or format spec")
        fields.add(name)
    return frozenset(fields)


def validate_template(template: str, *, mode: str, where: str = "template") -> frozenset[str]:
    """The fields `template` uses; a mistake raises `UserError` naming `where` (e.g. teachers[0].template).

    Needs {question}; {answer} only in teacher-forcing, where it is required (without the gold answer
    the prompt is free mode).
    """
    if mode not in MODES:
        raise UserError(f"{where}: unknown mode {mode!r} (expected 'teacher-forcing' or 'free')")
    fields = _fields(template, where)
    if "question" not in fields:
        raise UserError(f"{where}: the template must contain {{question}}")
    if mode == "free" and "answer" in fields:
        raise UserError(f"{where}: free mode must not give the answer; remove {{answer}} from the template")
    if mode == "teacher-forcing" and "answer" not in fields:
        raise UserError(f"{where}: teacher-forcing gives the gold answer; add {{answer}} to the template")
    return fields


def options_text(problem: Problem) -> str:
    """The {options} field: "\\nOptions: A) ... E) ..." for multiple choice, else ""."""
    return question_block(problem)[len(problem.question.strip()) :]


def format_example(example: Problem, *, mode: str) -> str:
    """One worked example in the shape the teacher should answer in, ending in "The answer is X."."""
    head = f"Question: {question_block(example)}\nAnswer:"
    if mode == "teacher-forcing":
        return f"{head} {example.answer}\nReasoning: {worked_solution(example)}"
    return f"{head} {worked_solution(example)}"


def build_teacher_prompt(
    problem: Problem,
    examples: Sequence[Problem],
    *,
    mode: str = "teacher-forcing",
    template: str | None = None,
    where: str = "template",
) -> str:
    """The prompt text for `problem`: the built-in TinyLLM template of `mode`, or `template`.

    `where` is the config key of the template, named by every `UserError` (teachers[i].template).
    """
    if template is None:
        template = TEACHER_FORCING_TEMPLATE if mode == "teacher-forcing" else FREE_TEMPLATE
    fields = validate_template(template, mode=mode, where=where)
    if examples and "examples" not in fields:
        raise UserError(
            f"{where}: {len(examples)} worked examples were asked for but the template has no {{examples}} "
            "(add it, or set num_examples: 0)"
        )
    values = {
        "examples": "".join(format_example(e, mode=mode) + "\n\n" for e in examples),
        "question": problem.question.strip(),
        "options": options_text(problem),
    }
    if mode == "teacher-forcing":
        values["answer"] = problem.answer
    return template.format(**values)


def as_chat(prompt_text: str) -> list[dict]:
    """Chat messages for a chat model: the teacher's system message, then the prompt as the user turn."""
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": prompt_text}]


# ---- completions

_LEADING_LABEL = re.compile(r"(?:A|Answer|Reasoning)\s*:\s*", re.IGNORECASE)
_NEW_QUESTION = re.compile(r"\n\s*(?:Question|Q|Problem)\s*\d*\s*[:.]", re.IGNORECASE)
_ANSWER_STATEMENT = re.compile(r"\banswer\s+is\b|####", re.IGNORECASE)
_SENTENCE_END = re.compile(r"\.(?!\d)|[!?\n]")


_PROGRAM_START = re.compile(r"(?:def|import|from)\s")


def looks_like_program(text: str) -> bool:
    """Whether `text` is a Python program (program-of-thought: "def solution(): ... return result"):
    it starts like one and parses. Prose that starts with "from" does not parse."""
    text = text.strip()
    if not _PROGRAM_START.match(text):
        return False
    try:
        ast.parse(text)
    except (SyntaxError, ValueError):  # ValueError: a NUL byte
        return False
    return True


def rationale_body(text: str) -> str:
    """The part of a completion a student learns from.

    Strips surrounding whitespace and a leading "A:", "Answer:" or "Reasoning:" label, cuts where
    the teacher starts a new "Question:", and cuts after the last final-answer sentence ("The
    answer is 72."), which stays. A program is returned whole after the label: the cuts read prose,
    and in code they would fire on a comment ("# the answer is the sum") or a `q: int` annotation.
    """
    body = text.strip()
    while (label := _LEADING_LABEL.match(body)) is not None and label.end() < len(body):
        body = body[label.end() :].lstrip()
    if looks_like_program(body):
        return body
    if (ramble := _NEW_QUESTION.search(body)) is not None:
        body = body[: ramble.start()]
    statements = list(_ANSWER_STATEMENT.finditer(body))
    if statements:
        # The answer may sit on the next line ("The answer is:\n72"): look for the end after it.
        start = statements[-1].end()
        start += len(body[start:]) - len(body[start:].lstrip(" \t\n:"))
        end = _SENTENCE_END.search(body, start + 1)
        if end is not None:
            body = body[: end.end() if end.group(0) != "\n" else end.start()]
    return body.strip()

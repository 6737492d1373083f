"""The `replay` backend: file formats, matching by id and by question, bad files, the real samples."""

from __future__ import annotations

import json
import re

import pytest

from scalingdown.data.gsm8k import load_gsm8k
from scalingdown.errors import UserError
from scalingdown.teach import Request, SamplingParams, get_backend
from scalingdown.teach.replay_backend import ReplayBackend


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return str(path)


def ask(problem_id=None, question=None, key=None) -> Request:
    meta = {k: v for k, v in (("problem_id", problem_id), ("question", question)) if v is not None}
    return Request(key or problem_id or question, "a prompt the replay backend never reads", meta)


def test_registered_and_options_are_checked(tmp_path):
    assert get_backend("replay") is ReplayBackend
    with pytest.raises(UserError, match=r"options\.format"):
        ReplayBackend.from_options({"model": "x.jsonl", "format": "jsonl"})


def test_jsonl_by_id_gives_up_to_n_texts_in_file_order(tmp_path):
    path = write_jsonl(
        tmp_path / "r.jsonl",
        [
            {"id": "p1", "text": "first"},
            {"id": "p2", "text": "only one"},
            {"id": "p1", "text": "second"},
            {"id": "p1", "text": "third"},
            {"id": 7, "text": "numeric id"},
        ],
    )
    backend = ReplayBackend({"model": path})
    reported = []
    results = backend.generate(
        [ask("p1"), ask("p2"), ask("p3"), ask("7")], SamplingParams(n=2), on_result=reported.append
    )
    assert [r.key for r in results] == ["p1", "p2", "p3", "7"] and reported == results
    assert results[0].texts == ["first", "second"]
    assert results[1].texts == ["only one"]  # fewer rows than n: what the file holds
    assert results[2].error == f"no rationale for this question in {path}" and results[2].texts == []
    assert results[3].texts == ["numeric id"]
    assert all(r.prompt_tokens == 0 and r.completion_tokens == 0 for r in results)
    assert backend.generate([ask("p1")], SamplingParams(n=5))[0].texts == ["first", "second", "third"]


def test_jsonl_by_question_ignores_case_and_whitespace_and_strips_the_answer_label(tmp_path):
    path = write_jsonl(
        tmp_path / "r.jsonl",
        [
            {
                "question": "Tom has  2 cats.\nHow many   legs?",
                "rationale": "\nA: 2 cats have 8 legs. The answer is 8.",
            },
            {"question": "Other?", "output": "Answer: no label left. The answer is 1."},
        ],
    )
    backend = ReplayBackend({"model": path})
    hit, other, miss = backend.generate(
        [
            ask("synthetic-train-00001", "  tom has 2 CATS. how many legs?"),
            ask(question="other?"),
            ask(question="Tom has 3 cats. How many legs?"),
        ],
        SamplingParams(),
    )
    assert hit.texts == ["2 cats have 8 legs. The answer is 8."]
    assert other.texts == ["no label left. The answer is 1."]
    assert not miss.ok and "no rationale" in miss.error


def test_an_id_match_wins_over_the_question(tmp_path):
    path = write_jsonl(
        tmp_path / "r.jsonl",
        [{"id": "p1", "question": "Q one?", "text": "by id"}, {"question": "Q two?", "text": "by question"}],
    )
    backend = ReplayBackend({"model": path})
    by_id, by_question = backend.generate([ask("p1", "Q two?"), ask("p9", "Q two?")], SamplingParams())
    assert by_id.texts == ["by id"] and by_question.texts == ["by question"]


def test_empty_rationales_are_skipped_and_an_all_empty_question_fails(tmp_path):
    path = write_jsonl(
        tmp_path / "r.jsonl",
        [{"id": "a", "text": ""}, {"id": "a", "text": "kept"}, {"id": "b", "text": "  "}],
    )
    a, b = ReplayBackend({"model": path}).generate([ask("a"), ask("b")], SamplingParams(n=3))
    assert a.texts == ["kept"]
    assert not b.ok and b.error == f"empty rationale for this question in {path} (line 3)"


def test_json_list_with_an_alpaca_input_field(tmp_path):
    path = tmp_path / "r.json"
    rows = [
        {"instruction": "Solve:", "input": "2 + 2?", "output": "4. The answer is 4.", "answer": "4"},
        {"instruction": "3 + 3?", "input": "", "output": "6. The answer is 6."},
    ]
    path.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    first, second = ReplayBackend({"model": str(path)}).generate(
        [ask(question="Solve: 2 + 2?"), ask(question="3 + 3?")], SamplingParams()
    )
    assert first.texts == ["4. The answer is 4."] and second.texts == ["6. The answer is 6."]


@pytest.mark.parametrize(
    ("content", "where", "message"),
    [
        ('{"id": "a", "text": "x"}\n{"id": "b", "text": \n', ":2: ", "malformed JSON line"),
        ('{"id": "a", "text": "x"}\n\n{"id": "b"}\n', ":3: ", "no rationale"),
        ('{"text": "x"}\n', ":1: ", "cannot match this row to a problem"),
        ('{"id": "a", "text": ["x"]}\n', ":1: ", "field 'text' should be a string, got list"),
        ('[{"instruction": "q", "output": "x"}, {"output": "y"}]', ": item 1: ", "cannot match"),
        ('[{"instruction": "q", "output": "x"}, "row"]', ": item 1: ", "expected an object, got str"),
        ('[{"instruction": "q",\n "output": "x"},\n oops]', ":3: ", "malformed JSON"),
        ("\n\n", ": ", "holds no rationales"),
    ],
)
def test_bad_files_name_the_file_and_the_line_or_item(tmp_path, content, where, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(UserError) as info:
        ReplayBackend.from_options({"model": str(path)})
    text = str(info.value)
    assert text.startswith(f"{path}{where}") and message in text and "\n" not in text


def test_a_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match=r"no-such\.json: no such replay file"):
        ReplayBackend.from_options({"model": str(tmp_path / "no-such.json")})


def test_the_model_id_changes_when_the_file_does(tmp_path):
    path = tmp_path / "r.jsonl"
    write_jsonl(path, [{"id": "a", "text": "x"}])
    before = ReplayBackend({"model": str(path)}).model
    assert before.startswith(str(path)) and ReplayBackend({"model": str(path)}).model == before
    write_jsonl(path, [{"id": "a", "text": "y"}])
    assert ReplayBackend({"model": str(path)}).model != before


def _normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def test_teacher_samples_mapped_to_real_gsm8k_problems(teacher_samples, gsm8k_dir):
    """Measures which GSM8K split the 1,055 LLM rationales belong to (README: train).

    Every row is matched through the backend against the real train and test problems. The share
    that maps to train is printed (run with -s); every row must map to some GSM8K problem, and a
    row answered by the backend must carry that row's own rationale.
    """
    rows = json.loads(teacher_samples.read_text(encoding="utf-8"))
    backend = ReplayBackend({"model": str(teacher_samples)})
    by_question = {_normalise(row["instruction"]): row for row in rows}
    mapped: dict[str, set[str]] = {}  # split -> the rows (by question) that a problem of it found
    for split in ("train", "test"):
        problems = load_gsm8k(split, gsm8k_dir)
        results = backend.generate([ask(p.id, p.question) for p in problems], SamplingParams())
        mapped[split] = set()
        for problem, result in zip(problems, results, strict=True):
            key = _normalise(problem.question)
            row = by_question.get(key)
            if row is None:
                assert not result.ok and "no rationale" in result.error
                continue
            mapped[split].add(key)
            if row["output"].strip():
                assert result.texts == [row["output"].strip().removeprefix("A:").strip()]
            else:
                assert "empty rationale" in result.error
    train, test = len(mapped["train"]), len(mapped["test"])
    print(
        f"\nteacher samples: {train}/{len(rows)} rows map to a GSM8K train problem "
        f"({train / len(rows):.1%}), {test}/{len(rows)} to a test problem"
    )
    assert len(by_question) == len(rows)  # no two rows share a question
    assert mapped["train"] | mapped["test"] == set(by_question)  # every row maps to some problem


PROGRAM = (
    "def solution():\n"
    '    """tom has 3 apples . he gets 4 more . how many ?"""\n'
    "    apples = 3\n"
    "    # the answer is the sum\n"
    "    result = apples + 4\n"
    "    return result"
)


def reft_row(item_id, question, answer_cot, answer_value="7.0") -> dict:
    return {"item_id": item_id, "question": question, "answer_cot": answer_cot, "answer_value": answer_value}


def write_list(path, rows) -> str:
    path.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    return str(path)


def test_reft_rows_map_by_item_id_to_svamp_ids_and_keep_programs_whole(tmp_path):
    path = write_list(
        tmp_path / "train_python.json",
        [
            reft_row("svamp_1", "tom has 3 apples . he gets 4 more . how many ?", f"\n{PROGRAM}\n"),
            reft_row("svamp_2", "a b c ?", "def solution():\n    return 2", "2.0"),
            reft_row("gsm8k_5", "Ann has 5 pens. How many?", "Ann has 5. Therefore, the answer is <5>."),
        ],
    )
    backend = ReplayBackend({"model": path})
    by_id, renamed, gsm8k, same_text, hub = backend.generate(
        [
            ask("svamp-1", "not the question the file holds"),
            ask("svamp-2"),
            ask("gsm8k-train-00005", "ann has 5 pens.  how many?"),
            # Another local SVAMP item that reads like svamp_1: another problem, so not recorded.
            ask("svamp-40", "tom has 3 apples . he gets 4 more . how many ?"),
            # A Hub problem has no ReFT item_id: the question is all there is to go by.
            ask("svamp-chal-9", "Tom has 3 apples . He gets 4 more . How many ?"),
        ],
        SamplingParams(),
    )
    assert by_id.texts == [PROGRAM]  # only the ends stripped: lines, indentation and comment kept
    assert renamed.texts == ["def solution():\n    return 2"]
    assert gsm8k.texts == ["Ann has 5. Therefore, the answer is <5>."]  # no svamp id: by question
    assert same_text.not_recorded and same_text.error == f"no rationale for this question in {path}"
    assert hub.texts == [PROGRAM]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (
            [reft_row("svamp_1", "q ?", "a"), reft_row("svamp_1", "q ?", "b")],
            "item 1: item_id 'svamp_1' appears twice (first at item 0)",
        ),
        ([reft_row("svamp_1", "q ?", None)], "item 0: field 'answer_cot' should be a string, got null"),
        ([reft_row("svamp_1", "q ?", ["x"])], "item 0: field 'answer_cot' should be a string, got list"),
        ([reft_row(" ", "q ?", "a")], "item 0: a row with 'answer_cot' needs a non-empty 'item_id'"),
        (
            [{"question": "q ?", "answer_cot": "a"}],
            "item 0: a row with 'answer_cot' needs a non-empty 'item_id'",
        ),
    ],
)
def test_bad_reft_files_name_the_item(tmp_path, rows, message):
    path = write_list(tmp_path / "bad.json", rows)
    with pytest.raises(UserError) as info:
        ReplayBackend.from_options({"model": path})
    assert str(info.value) == f"{path}: {message}"


@pytest.mark.parametrize(
    ("name", "rows", "recorded"), [("train_nl.json", 3076, 3076), ("train_python.json", 3043, 3023)]
)
def test_reft_files_map_onto_the_svamp_train_problems(name, rows, recorded):
    """Every row of both recorded teachers answers exactly one SVAMP train problem, or none: the
    program file holds 20 programs for items that are in neither split, and 53 train problems have
    no program: those are 'not recorded', not failures."""
    from scalingdown.data.svamp import load_svamp
    from tests.conftest import shared_path

    folder = shared_path("svamp_reft")
    train, test = load_svamp("train", folder), load_svamp("test", folder)
    backend = ReplayBackend({"model": str(folder / name)})
    assert len(backend.index.rows) == rows
    used: dict[int, list[str]] = {}  # row -> the problems it answers
    for problem in (*train, *test):
        for row in backend.index.find({"problem_id": problem.id, "question": problem.question}):
            used.setdefault(id(row), []).append(problem.id)
    assert all(len(ids) == 1 for ids in used.values())  # no row answers two problems
    assert not {ids[0] for ids in used.values()} & {p.id for p in test}  # nor a test problem
    results = backend.generate([ask(p.id, p.question) for p in train], SamplingParams())
    assert sum(r.ok for r in results) == len(used) == recorded
    assert sum(r.not_recorded for r in results) == 3076 - recorded  # 0 prose, 53 programs missing
    unused = [row for row in backend.index.rows if id(row) not in used]
    assert len(unused) == rows - recorded  # 0 prose rows, 20 programs
    assert not {row.problem_id for row in unused} & {p.id for p in (*train, *test)}
    raw = {r["item_id"]: r["answer_cot"] for r in json.loads((folder / name).read_text(encoding="utf-8"))}
    for problem, result in zip(train, results, strict=True):
        if result.ok:
            assert result.texts == [raw[problem.meta["item_id"]].strip()]  # the file's text, unchanged

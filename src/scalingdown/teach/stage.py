"""The teach stage: every teacher writes rationales for the train problems, checked and accounted.

For each teacher, in config order (or cheapest first with cost-aware routing):
  prompts (TinyLLM: in-context examples + teacher-forcing) -> backend behind the SQLite cache ->
  rationale bodies, deduplicated -> verification (answer, arithmetic, work; or the program's run)
  -> policy (keep / drop / flag)
and, on held-out test problems, a free mode without the gold answer that measures the teacher's own
accuracy. Every answer is cached the moment it arrives, so a rerun after a crash sends no request
whose answer is stored; the files below are written atomically once a teacher is done:

  teachers/<name>/rationales.jsonl   kept rationales (problem_id, sample, text, answer, verified, ...)
  teachers/<name>/rejected.jsonl     dropped ones, with the reason, for inspection
  teachers/<name>/free.jsonl         free-mode answers on test problems
  teachers/<name>/stats.json         kept share, verified share, counts by verdict category, free accuracy
  teachers/<name>/usage.json         requests, cache hits, retries, failures by reason, tokens, cost
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from scalingdown.artifacts import read_json, write_json, write_jsonl
from scalingdown.config import StudyConfig, TeacherConfig
from scalingdown.data.schema import Problem
from scalingdown.digests import digest
from scalingdown.errors import UserError
from scalingdown.teach.backend import Request, Result, SamplingParams, TeacherBackend, get_backend
from scalingdown.teach.cache import CachedBackend, ResponseCache
from scalingdown.teach.prompts import ExampleSelector, as_chat, build_teacher_prompt, rationale_body
from scalingdown.teach.sandbox import Sandbox
from scalingdown.teach.usage import Usage, progress_bar
from scalingdown.teach.verify import TeacherStats, apply_policy, dedupe, rationale_text, verify_rationale

CACHE_FILE = "cache.sqlite"


def teacher_dir(run_dir: Path, name: str) -> Path:
    return run_dir / "teachers" / name


def build_backend(teacher: TeacherConfig, where: str, run_dir: Path, seed: int) -> TeacherBackend:
    """The teacher's backend from its config; the model id is passed in as the `model` option."""
    cls = get_backend(teacher.backend)
    model = teacher.model if teacher.tiny is None else str(tiny_teacher(teacher, run_dir, seed))
    options = {"model": model, **teacher.options}
    return cls.from_options(options, where=f"{where}.options")


def teacher_corpus(teacher: TeacherConfig, seed: int) -> list[str]:
    """Worked solutions in the teacher's own prompt formats (teacher-forcing and free), from a
    separate synthetic corpus: the way large models learn mathematics before they see the task."""
    from scalingdown.data.synthetic import generate
    from scalingdown.evaluate.prompts import worked_solution

    corpus = teacher.corpus
    problems = generate(
        corpus.n_train,
        seed=seed + 1000,
        split="corpus",
        min_steps=corpus.min_steps,
        max_steps=corpus.max_steps,
        max_value=corpus.max_value,
        templates=corpus.templates,
    )
    texts = []
    for problem in problems:
        solution = worked_solution(problem)
        for mode in ("teacher-forcing", "free"):
            texts.append(f"{build_teacher_prompt(problem, [], mode=mode, template=None)} {solution}")
    return texts


def tiny_teacher(teacher: TeacherConfig, run_dir: Path, seed: int) -> Path:
    """Build (once; reused by later runs) and pre-train a tiny teacher under teachers/.models/<name>."""
    from scalingdown.models.tiny import build_tiny

    texts = teacher_corpus(teacher, seed)
    return build_tiny(teacher.tiny, texts, run_dir / "teachers" / ".models" / teacher.name, seed=seed)


def uses_chat(teacher: TeacherConfig) -> bool:
    """Chat messages for chat teachers: explicit `chat`; else an `openai` teacher on its chat API, or
    a local (`hf`, `vllm`) model whose tokenizer has a chat template (an instruct model)."""
    if teacher.chat is not None:
        return teacher.chat
    if teacher.backend == "openai":
        return teacher.options.get("api", "chat") == "chat"
    if teacher.backend in ("hf", "vllm") and teacher.model is not None:
        return has_chat_template(teacher.model)
    return False


def has_chat_template(model: str) -> bool:
    """Whether a model's tokenizer carries a chat template (reads the tokenizer only, not the weights)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(model).chat_template is not None
    except (OSError, ValueError):
        return False  # the backend reports an unloadable model itself, with its own message


def teacher_requests(
    teacher: TeacherConfig,
    problems: Sequence[Problem],
    selector: ExampleSelector | None,
    *,
    mode: str,
    where: str,
) -> list[Request]:
    """One request per problem; its key is the problem id."""
    chat = uses_chat(teacher)
    # A teacher's own template is written for its own mode; free-mode accuracy of a teacher-forcing
    # teacher uses the built-in free template.
    template = teacher.template if mode == teacher.mode else None
    requests = []
    for problem in problems:
        examples = selector.select(problem, teacher.num_examples) if selector and teacher.num_examples else []
        text = build_teacher_prompt(
            problem, examples, mode=mode, template=template, where=f"{where}.template"
        )
        requests.append(
            Request(
                key=problem.id,
                prompt=as_chat(text) if chat else text,
                meta={"problem_id": problem.id, "question": problem.question},
            )
        )
    return requests


def sampling_params(teacher: TeacherConfig, seed: int, *, free: bool = False) -> SamplingParams:
    """The teacher's sampling; free-mode answers are greedy and single, as an accuracy measurement."""
    s = teacher.sampling
    if free:
        return SamplingParams(temperature=0.0, max_tokens=s.max_tokens, n=1, stop=tuple(s.stop), seed=seed)
    return SamplingParams(
        temperature=s.temperature,
        top_p=s.top_p,
        max_tokens=s.max_tokens,
        n=s.n,
        stop=tuple(s.stop),
        seed=seed,
    )


def _ask(
    backend: TeacherBackend,
    requests: list[Request],
    params: SamplingParams,
    usage: Usage,
    label: str,
    progress: bool,
) -> dict[str, Result]:
    with progress_bar(len(requests), label, usage, enabled=progress) as on_result:
        results = backend.generate(requests, params, on_result=on_result)
    return {r.key: r for r in results}


def _verify_rows(
    teacher: TeacherConfig,
    problems: Sequence[Problem],
    results: dict[str, Result],
    study: StudyConfig,
    prompts: dict[str, object],
) -> tuple[list[dict], list[dict], TeacherStats]:
    stats = TeacherStats()
    kept_rows, rejected_rows = [], []
    sandbox = Sandbox() if teacher.verify == "program" else None  # one worker for all its programs
    for problem in problems:
        result = results.get(problem.id)
        if result is None or not result.ok:
            continue
        bodies = dedupe(
            [rationale_text(t, teacher.verify, rationale_body) for t in result.texts if t.strip()]
        )
        for sample, body in enumerate(bodies):
            verdict = verify_rationale(
                problem,
                body,
                check_arithmetic=study.teach.check_arithmetic,
                kind=teacher.verify,
                sandbox=sandbox,
            )
            kept, flagged = apply_policy(verdict, study.teach.policy)
            stats.add(verdict, kept)
            row = {
                "problem_id": problem.id,
                "teacher": teacher.name,
                "sample": sample,
                "text": body,
                "answer": verdict.answer,
                "gold": problem.answer,
                "correct": verdict.correct,
                "verified": verdict.verified,
                "category": verdict.category,
                "reason": verdict.reason,
                "flagged": flagged,
                "arithmetic_errors": verdict.arithmetic_errors,
                # What the teacher was asked: the white-box KL term scores it in this very context.
                "prompt": prompts.get(problem.id),
            }
            (kept_rows if kept else rejected_rows).append(row)
    if sandbox is not None:
        sandbox.close()
    return kept_rows, rejected_rows, stats


def _free_mode(
    teacher: TeacherConfig,
    backend: TeacherBackend,
    test: Sequence[Problem],
    selector: ExampleSelector | None,
    study: StudyConfig,
    usage: Usage,
    where: str,
    progress: bool,
) -> tuple[list[dict], dict | None]:
    """The teacher's own accuracy on held-out test problems, answering without the gold answer."""
    from scalingdown.data.answers import score
    from scalingdown.evaluate.metrics import accuracy

    if not test:
        return [], None
    requests = teacher_requests(teacher, test, selector, mode="free", where=where)
    results = _ask(
        backend, requests, sampling_params(teacher, study.seed, free=True), usage, "free", progress
    )
    rows = []
    for problem in test:
        result = results[problem.id]
        text = rationale_body(result.texts[0]) if result.ok and result.texts else ""
        scored = score(problem, text)
        rows.append(
            {
                "problem_id": problem.id,
                "text": text,
                "answer": scored.flexible_answer,
                "correct": scored.flexible_correct,
                "error": result.error,
            }
        )
    answered = [r for r in rows if r["error"] is None]
    if not answered:
        return rows, None
    return rows, {**accuracy([r["correct"] for r in answered]).as_dict(), "failed": len(rows) - len(answered)}


def teach_key(
    teacher: TeacherConfig,
    study: StudyConfig,
    train: Sequence[Problem],
    test: Sequence[Problem],
    identity: str,
) -> str:
    """What a teacher's files depend on: its config, the model it reaches (a local model's
    fingerprint, a replay file's hash), the checking policy, the seed, and the exact problems it is
    asked about (train, and test for free mode)."""
    teach = study.teach
    return digest(
        [
            teacher.model_dump(mode="json"),
            identity,
            [teach.policy, teach.check_arithmetic],
            study.seed,
            [[p.id, p.question, p.answer, p.options] for p in train],
            [[p.id, p.question, p.answer, p.options] for p in test],
        ]
    )


def finished_summary(out: Path, key: str) -> dict | None:
    """The summary of an earlier run of this teacher on exactly these inputs, if it finished with
    nothing failed (a teacher with failed requests runs again: the cache answers the rest)."""
    try:
        stats, usage = read_json(out / "stats.json"), read_json(out / "usage.json")
    except UserError:
        return None
    if not isinstance(stats, dict) or stats.get("inputs_digest") != key or "error" in stats:
        return None
    if not all((out / name).is_file() for name in ("rationales.jsonl", "rejected.jsonl", "free.jsonl")):
        return None
    if any((usage.get(part) or {}).get("failed") for part in ("rationales", "free_mode")):
        return None
    return {**stats, "usage": {**usage, "cost_this_run": 0.0}, "skipped": "done with these inputs"}


def teach_one(
    teacher: TeacherConfig,
    index: int,
    study: StudyConfig,
    train: Sequence[Problem],
    test: Sequence[Problem],
    cache: ResponseCache,
    *,
    progress: bool = True,
) -> dict:
    """Run one teacher over `train` (and free mode over `test`); write its files; return its summary."""
    where = f"teachers[{index}]"
    out = teacher_dir(Path(study.run_dir), teacher.name)
    prices = {
        "price_input_per_1k": teacher.price_input_per_1k,
        "price_output_per_1k": teacher.price_output_per_1k,
    }
    usage, free_usage = Usage(**prices), Usage(**prices)
    started = time.perf_counter()
    inner = build_backend(teacher, where, Path(study.run_dir), study.seed)
    key = teach_key(teacher, study, train, test, inner.cache_identity())
    earlier = finished_summary(out, key)
    if earlier is not None:
        inner.close()
        return earlier
    backend = CachedBackend(inner, cache)
    try:
        selector = None
        if teacher.num_examples:
            selector = ExampleSelector(train, method=teacher.example_selection, seed=study.seed, where=where)
        requests = teacher_requests(teacher, train, selector, mode=teacher.mode, where=where)
        results = _ask(backend, requests, sampling_params(teacher, study.seed), usage, teacher.name, progress)
        prompts = {r.key: r.prompt for r in requests}
        kept, rejected, stats = _verify_rows(teacher, train, results, study, prompts)
        free_rows, free_accuracy = [], None
        if get_backend(teacher.backend).answers_new_questions:  # a recorded teacher has no free mode
            free_rows, free_accuracy = _free_mode(
                teacher, backend, test, selector, study, free_usage, where, progress
            )
    finally:
        backend.close()
    summary = {
        "teacher": teacher.name,
        "backend": teacher.backend,
        "model": teacher.model,
        "mode": teacher.mode,
        "questions": len(train),
        **stats.as_dict(),
        "free_accuracy": free_accuracy,
        "seconds": time.perf_counter() - started,
        "inputs_digest": key,
    }
    write_jsonl(out / "rationales.jsonl", kept)
    write_jsonl(out / "rejected.jsonl", rejected)
    write_jsonl(out / "free.jsonl", free_rows)
    usage_record = {
        "rationales": usage.as_dict(),
        "free_mode": free_usage.as_dict(),
        "cost": usage.cost + free_usage.cost,
        "cost_this_run": usage.cost_this_run + free_usage.cost_this_run,
    }
    write_json(out / "usage.json", usage_record)
    write_json(out / "stats.json", summary)
    return {**summary, "usage": usage_record}


def run_teach_stage(
    study: StudyConfig, *, only: list[str] | None = None, progress: bool = True
) -> dict[str, dict]:
    """Every teacher in turn (or those named in `only`); a teacher that fails is reported and the others
    go on. teachers/summary.json keeps the entries of teachers not run this time, so one job per
    teacher (e.g. one SLURM job per vLLM server) builds the same summary as one run of all of them."""
    from scalingdown.data.stage import load_run_problems

    run_dir = Path(study.run_dir)
    if not study.teachers:
        raise UserError("no teachers configured (the 'teachers' list is empty)")
    names = [t.name for t in study.teachers]
    unknown = sorted(set(only or []) - set(names))
    if unknown:
        raise UserError(f"--teacher {unknown[0]}: no such teacher; the config has {', '.join(names)}")
    train = load_run_problems(run_dir, "train")[: study.teach.limit]
    test = load_run_problems(run_dir, "test")[: study.teach.free_eval_problems]
    (run_dir / "teachers").mkdir(parents=True, exist_ok=True)
    order = list(enumerate(study.teachers))
    if study.teach.routing:
        costs = {t.name: expected_cost_per_question(t, study) for t in study.teachers}
        order.sort(key=lambda item: (costs[item[1].name], item[0]))
    verified: Counter[str] = Counter()
    summary_path = run_dir / "teachers" / "summary.json"
    earlier = read_json(summary_path) if only and summary_path.is_file() else {}
    summaries: dict[str, dict] = {}
    with ResponseCache(run_dir / "teachers" / CACHE_FILE) as cache:
        for index, teacher in order:
            if only and teacher.name not in only:
                if teacher.name in earlier:
                    summaries[teacher.name] = earlier[teacher.name]
                if study.teach.routing:  # its stored rationales still count for the teachers after it
                    for row in _read_kept(run_dir, teacher.name):
                        verified[row["problem_id"]] += bool(row["verified"])
                continue
            todo = list(train)
            if study.teach.routing:
                todo = [p for p in train if verified[p.id] < study.teach.target_verified]
            try:
                summary = teach_one(teacher, index, study, todo, test, cache, progress=progress)
            except UserError as exc:
                summaries[teacher.name] = {"teacher": teacher.name, "error": str(exc)}
                write_json(teacher_dir(run_dir, teacher.name) / "stats.json", summaries[teacher.name])
                continue
            if study.teach.routing:
                summary["routing"] = {"asked": len(todo), "skipped": len(train) - len(todo)}
                for row in _read_kept(run_dir, teacher.name):
                    verified[row["problem_id"]] += bool(row["verified"])
            summaries[teacher.name] = summary
    if study.teach.routing:
        _routing_savings(summaries)
    write_json(summary_path, {name: summaries[name] for name in names if name in summaries})
    return {name: summaries[name] for name in names if name in summaries and (not only or name in only)}


def expected_cost_per_question(teacher: TeacherConfig, study: StudyConfig) -> float:
    """What one question is expected to cost this teacher, for routing's cheapest-first order: its
    measured tokens per answered question (an earlier run's usage.json, failed attempts included)
    when there are any, else the plan's estimate; priced by its input and output prices apart, since
    a teacher that is cheap per token but writes long answers may cost more per question."""
    from scalingdown.plan import question_tokens

    prompt, completion = question_tokens(teacher, study)
    path = teacher_dir(Path(study.run_dir), teacher.name) / "usage.json"
    if path.is_file():
        try:
            record = read_json(path).get("rationales") or {}
        except (UserError, AttributeError):
            record = {}
        answered = record.get("answered") or 0
        if answered > 0:
            prompt = (record.get("prompt_tokens", 0) + record.get("wasted_prompt_tokens", 0)) / answered
            completion = (
                record.get("completion_tokens", 0) + record.get("wasted_completion_tokens", 0)
            ) / answered
    return (prompt * teacher.price_input_per_1k + completion * teacher.price_output_per_1k) / 1000


def _read_kept(run_dir: Path, name: str) -> list[dict]:
    from scalingdown.artifacts import read_jsonl

    path = teacher_dir(run_dir, name) / "rationales.jsonl"
    return read_jsonl(path) if path.is_file() else []


def _routing_savings(summaries: dict[str, dict]) -> None:
    """What routing saved: each skipped question priced at the teacher's mean cost per asked question."""
    for summary in summaries.values():
        routing = summary.get("routing")
        if not routing:
            continue
        cost = summary["usage"]["rationales"]["cost"]
        per_question = cost / max(routing["asked"], 1)
        routing["estimated_cost_saved"] = per_question * routing["skipped"]
        routing["cost_without_routing"] = cost + routing["estimated_cost_saved"]

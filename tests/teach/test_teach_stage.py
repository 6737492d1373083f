"""The teach stage end to end, over real HTTP on 127.0.0.1 and real files.

Teachers here are a local `hf` tiny model, an `openai` teacher behind `scalingdown serve` or the
loopback fault server, and a `replay` teacher reading real LLM rationales for GSM8K.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from scalingdown.artifacts import read_json, read_jsonl
from scalingdown.config import TinyModelConfig
from scalingdown.config_file import load_config, parse_config
from scalingdown.data.gsm8k import load_gsm8k
from scalingdown.data.schema import write_problems
from scalingdown.data.synthetic import generate
from scalingdown.evaluate.prompts import worked_example
from scalingdown.teach.cache import cache_key
from scalingdown.teach.stage import run_teach_stage, sampling_params
from tests.teach.fault_server import FaultConfig, FaultServer

KEY = "sk-secret-test-key-0123456789"


def make_run(tmp_path: Path, train, test) -> Path:
    run = tmp_path / "run"
    write_problems(run / "data" / "train.jsonl", train)
    write_problems(run / "data" / "test.jsonl", test)
    return run


def questions_with_samples(gsm8k_dir: Path, teacher_samples: Path) -> list:
    """GSM8K problems that the real LLM rationales answer.

    The sample file's questions are GSM8K *test* questions (checked: none is a train question), so
    here they play the train split of a throwaway run; a real study must never teach on test problems.
    """
    samples = json.loads(teacher_samples.read_text())
    asked = {" ".join(s["instruction"].split()).lower() for s in samples}
    return [p for p in load_gsm8k("test", gsm8k_dir) if " ".join(p.question.split()).lower() in asked]


def study_for(run: Path, teachers: list[dict], **teach) -> object:
    return parse_config({"run_dir": str(run), "seed": 0, "teachers": teachers, "teach": teach})


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory) -> Path:
    from scalingdown.models.tiny import build_tiny

    texts = [worked_example(p) for p in generate(200, seed=5, split="train")]
    # Two worked GSM8K examples make a prompt of ~1,000 tiny-tokenizer tokens: room for them.
    config = TinyModelConfig(
        arch="llama", hidden_size=32, num_layers=2, num_heads=2, vocab_size=320, max_positions=2048
    )
    return build_tiny(config, texts, tmp_path_factory.mktemp("teacher") / "model", seed=0, progress=False)


def openai_teacher(name: str, url: str, model: str = "teacher-7b", env: str | None = None, **extra) -> dict:
    options = {
        "base_urls": [url],
        "max_concurrency": 4,
        "max_retries": 2,
        "request_timeout_s": 5,
        "backoff_base_s": 0.01,
        "backoff_max_s": 0.05,
        "api": "completions",
    }
    if env:
        options["api_key_env"] = env
    return {
        "name": name,
        "backend": "openai",
        "model": model,
        "options": options,
        "num_examples": 1,
        "sampling": {"temperature": 0.0, "max_tokens": 32},
        **extra,
    }


@pytest.mark.parametrize("dataset", ["gsm8k", "aqua_rat"])
def test_hf_and_served_teachers_on_real_data(tmp_path, dataset, tiny_teacher):
    """The issue's "done when": an `hf` teacher and an `openai` teacher behind `scalingdown serve`."""
    from scalingdown.data.aqua import load_aqua
    from scalingdown.serve.server import start_server
    from tests.conftest import shared_path

    if dataset == "gsm8k":
        folder = shared_path("gsm8k")
        train, test = load_gsm8k("train", folder)[:10], load_gsm8k("test", folder)[:4]
    else:
        folder = shared_path("aqua_rat")
        train, test = load_aqua("dev", folder)[:10], load_aqua("test", folder)[:4]
    run = make_run(tmp_path, train, test)
    with start_server(str(tiny_teacher), model_name="tiny-served") as server:
        study = study_for(
            run,
            [
                {
                    "name": "local",
                    "backend": "hf",
                    "model": str(tiny_teacher),
                    "num_examples": 2,
                    "sampling": {"temperature": 0.8, "n": 2, "max_tokens": 24},
                    "price_input_per_1k": 0.001,
                },
                openai_teacher("served", server.url, model="tiny-served", price_output_per_1k=0.002),
            ],
            policy="flag",
            free_eval_problems=4,
        )
        summaries = run_teach_stage(study, progress=False)
    for name in ("local", "served"):
        out = run / "teachers" / name
        stats, usage = read_json(out / "stats.json"), read_json(out / "usage.json")
        rows = read_jsonl(out / "rationales.jsonl")
        assert stats["questions"] == 10 and usage["rationales"]["answered"] == 10
        assert usage["rationales"]["prompt_tokens"] > 0 and usage["rationales"]["completion_tokens"] > 0
        assert stats["rationales"] == len(rows) + len(read_jsonl(out / "rejected.jsonl"))
        assert {r["problem_id"] for r in rows} <= {p.id for p in train}
        assert all("verified" in r and "flagged" in r for r in rows)  # policy flag keeps every rationale
        assert len(read_jsonl(out / "free.jsonl")) == 4 and stats["free_accuracy"]["n"] == 4
        assert summaries[name]["usage"]["cost"] == usage["cost"] > 0
    local = read_jsonl(run / "teachers" / "local" / "rationales.jsonl")
    assert max(r["sample"] for r in local) >= 1  # n = 2 samples, deduplicated
    # A rerun on the same inputs is done already; with another policy it is answered from the cache.
    again = run_teach_stage(
        study_for(run, [study.teachers[0].model_dump()], policy="flag", free_eval_problems=4), progress=False
    )
    assert again["local"].get("skipped") and again["local"]["usage"]["cost_this_run"] == 0
    again = run_teach_stage(
        study_for(run, [study.teachers[0].model_dump()], policy="keep", free_eval_problems=4), progress=False
    )
    assert again["local"]["usage"]["rationales"]["requests_sent"] == 0
    assert again["local"]["usage"]["rationales"]["cache_hits"] == 10


def test_replay_teacher_writes_verified_rationales_for_real_gsm8k(tmp_path, gsm8k_dir, teacher_samples):
    train = questions_with_samples(gsm8k_dir, teacher_samples)[:40]
    run = make_run(tmp_path, train, load_gsm8k("train", gsm8k_dir)[:2])
    study = study_for(
        run,
        [{"name": "llm", "backend": "replay", "model": str(teacher_samples), "num_examples": 0}],
        free_eval_problems=0,
    )
    summary = run_teach_stage(study, progress=False)["llm"]
    rows = read_jsonl(run / "teachers" / "llm" / "rationales.jsonl")
    assert len(train) == 40 and summary["rationales"] == 40
    assert 0 < summary["kept"] == len(rows) < 40  # the file holds wrong rationales too: dropped
    assert all(r["verified"] and r["correct"] for r in rows)
    rejected = read_jsonl(run / "teachers" / "llm" / "rejected.jsonl")
    assert all(not r["verified"] for r in rejected)


def test_aqua_teacher_forcing_prompts_carry_options_and_answer(tmp_path, aqua_dir):
    from scalingdown.data.aqua import load_aqua

    train = load_aqua("dev", aqua_dir)[:6]
    run = make_run(tmp_path, train, load_aqua("test", aqua_dir)[:2])
    with FaultServer(api_key=None) as server:
        study = study_for(
            run, [openai_teacher("t", server.base_url, num_examples=2)], policy="keep", free_eval_problems=2
        )
        run_teach_stage(study, progress=False)
        sent = server.prompts_sent()
    for problem in train:  # requests run concurrently: find each problem's prompt by its question
        prompt = next(p for p in sent if problem.question.strip() in p.rsplit("Question:", 1)[-1])
        asked = prompt.rsplit("Question:", 1)[-1]  # the last block; the ones before are worked examples
        assert all(f"{letter}) {text}" in asked for letter, text in problem.options.items())
        assert f"Answer: {problem.answer}" in asked
    assert len(read_jsonl(run / "teachers" / "t" / "rationales.jsonl")) == 6  # policy keep


def test_bad_teachers_fail_one_line_each_and_the_others_go_on(tmp_path, monkeypatch):
    train = generate(8, seed=1, split="train")
    run = make_run(tmp_path, train, generate(2, seed=2, split="test"))
    monkeypatch.setenv("GOOD_KEY", KEY)
    monkeypatch.setenv("WRONG_KEY", "sk-wrong")
    with (
        FaultServer(api_key=KEY) as good,
        FaultServer(api_key=None, faults=FaultConfig(empty_completion=True)) as empty,
    ):
        dead = "http://127.0.0.1:9/v1"  # discard port: nothing listens
        teachers = [
            openai_teacher("unreachable", dead),
            openai_teacher("wrong-key", good.base_url, env="WRONG_KEY"),
            openai_teacher("no-such-model", good.base_url, model="gpt-17", env="GOOD_KEY"),
            openai_teacher("empty", empty.base_url),
            openai_teacher("good", good.base_url, env="GOOD_KEY", num_examples=0),
            {
                "name": "missing-env",
                "backend": "openai",
                "model": "m",
                "options": {"base_urls": [good.base_url], "api_key_env": "NOT_SET_ANYWHERE"},
            },
        ]
        started = time.perf_counter()
        summaries = run_teach_stage(
            study_for(run, teachers, policy="keep", free_eval_problems=0), progress=False
        )
        assert time.perf_counter() - started < 30
    reasons = {
        name: list(s.get("usage", {}).get("rationales", {}).get("failure_reasons", {}))
        for name, s in summaries.items()
    }
    assert len(reasons["unreachable"]) == 1 and "127.0.0.1:9" in reasons["unreachable"][0]
    assert len(reasons["wrong-key"]) == 1 and "401" in reasons["wrong-key"][0]
    assert len(reasons["no-such-model"]) == 1 and "404" in reasons["no-such-model"][0]
    assert reasons["empty"] == ["empty completion"]
    assert "NOT_SET_ANYWHERE" in summaries["missing-env"]["error"]
    assert summaries["good"]["usage"]["rationales"]["answered"] == 8
    assert len(read_jsonl(run / "teachers" / "good" / "rationales.jsonl")) == 8
    for name in ("unreachable", "wrong-key", "no-such-model", "empty"):
        assert read_jsonl(run / "teachers" / name / "rationales.jsonl") == []
    # Nothing stored is lost: the good teacher rerun with a wrong key keeps its cached answers.
    monkeypatch.setenv("GOOD_KEY", "sk-now-wrong")
    with FaultServer(api_key=KEY) as good_again:
        rerun = run_teach_stage(
            study_for(
                run,
                [openai_teacher("good", good_again.base_url, env="GOOD_KEY", num_examples=0)],
                policy="keep",
                free_eval_problems=0,
            ),
            progress=False,
        )
        assert good_again.log == [] or all(r.prompt not in good.prompts_sent() for r in good_again.log)
    assert rerun["good"]["usage"]["rationales"]["cache_hits"] == 8
    assert len(read_jsonl(run / "teachers" / "good" / "rationales.jsonl")) == 8


def _teach_cli(config: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "scalingdown.cli", "teach", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _write_config(path: Path, run: Path, url: str) -> Path:
    teacher = openai_teacher("remote", url, env="TEACH_KEY", num_examples=1)
    teacher["options"]["max_concurrency"] = 2
    path.write_text(
        yaml.safe_dump(
            {
                "run_dir": str(run),
                "seed": 3,
                "teachers": [teacher],
                "teach": {"policy": "keep", "free_eval_problems": 0},
            }
        )
    )
    return path


def test_kill_9_halfway_then_rerun_sends_nothing_stored_and_matches_a_clean_run(tmp_path):
    train = generate(40, seed=1, split="train")
    test = generate(2, seed=2, split="test")
    env = {**os.environ, "TEACH_KEY": KEY, "TQDM_DISABLE": "1"}
    with FaultServer(api_key=KEY, faults=FaultConfig(latency_s=0.15)) as server:
        run = make_run(tmp_path / "a", train, test)
        config = _write_config(tmp_path / "a.yaml", run, server.base_url)
        proc = _teach_cli(config, env)
        deadline = time.monotonic() + 60
        while len(server.successes()) < 12 and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL
        with sqlite3.connect(run / "teachers" / "cache.sqlite") as db:
            stored_keys = {row[0] for row in db.execute("SELECT key FROM responses")}
        stored = len(stored_keys)
        assert 0 < stored < 40, "the kill should land halfway"
        assert not (run / "teachers" / "remote" / "rationales.jsonl").exists()
        sent_before = set(server.prompts_sent())
        log_mark = len(server.log)
        finished = _teach_cli(config, env)
        out, err = finished.communicate(timeout=120)
        assert finished.returncode == 0, err
        resent = [r.prompt for r in server.log[log_mark:] if r.prompt in sent_before and r.status == 200]
        # Which prompts the killed run stored, from the cache's own keys (the server's order of answers
        # is not the order the client stored them in).
        teacher = load_config(config).teachers[0]
        params = sampling_params(teacher, 3)
        stored_prompts = [
            p for p in sent_before if cache_key("openai", teacher.model, p, params) in stored_keys
        ]
        assert len(stored_prompts) == stored
        assert not set(resent) & set(stored_prompts)
        assert len(server.log[log_mark:]) <= 40 - stored + 2  # in-flight at the kill may go again
        # An uninterrupted run with the same seed writes the same rationales.
        clean_run = make_run(tmp_path / "b", train, test)
        clean = _teach_cli(_write_config(tmp_path / "b.yaml", clean_run, server.base_url), env)
        assert clean.wait(timeout=120) == 0
    interrupted = read_jsonl(run / "teachers" / "remote" / "rationales.jsonl")
    assert interrupted == read_jsonl(clean_run / "teachers" / "remote" / "rationales.jsonl")
    assert len(interrupted) == 40
    # The key is in no file of the run directory, no log and no output.
    for path in list(run.rglob("*")) + list(clean_run.rglob("*")):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path
    assert KEY not in out and KEY not in err


def test_cost_aware_routing_asks_the_expensive_teacher_only_where_the_cheap_one_failed(
    tmp_path, gsm8k_dir, teacher_samples
):
    train = questions_with_samples(gsm8k_dir, teacher_samples)[:30]
    run = make_run(tmp_path, train, load_gsm8k("train", gsm8k_dir)[:1])
    with FaultServer(api_key=None) as server:
        teachers = [
            openai_teacher(
                "expensive",
                server.base_url,
                num_examples=0,
                price_input_per_1k=10.0,
                price_output_per_1k=30.0,
            ),
            {
                "name": "cheap",
                "backend": "replay",
                "model": str(teacher_samples),
                "num_examples": 0,
                "price_input_per_1k": 0.01,
            },
        ]
        summaries = run_teach_stage(
            study_for(run, teachers, routing=True, free_eval_problems=0), progress=False
        )
        sent = len(server.prompts_sent())
    cheap_verified = summaries["cheap"]["verified"]
    assert 0 < cheap_verified < 30
    assert summaries["expensive"]["routing"]["asked"] == 30 - cheap_verified == sent
    routing = summaries["expensive"]["routing"]
    assert routing["skipped"] == cheap_verified
    assert routing["estimated_cost_saved"] > 0
    assert routing["cost_without_routing"] > summaries["expensive"]["usage"]["rationales"]["cost"]


def test_one_teacher_per_job_builds_the_same_summary_and_routing_as_one_run(
    tmp_path, gsm8k_dir, teacher_samples
):
    """`scalingdown teach --teacher NAME`: one job per teacher server, as the SLURM template runs it."""
    from scalingdown.errors import UserError

    train = questions_with_samples(gsm8k_dir, teacher_samples)[:30]
    run = make_run(tmp_path, train, load_gsm8k("train", gsm8k_dir)[:1])
    cheap = {
        "name": "cheap",
        "backend": "replay",
        "model": str(teacher_samples),
        "num_examples": 0,
        "price_input_per_1k": 0.01,
    }
    with FaultServer(api_key=None) as server:
        expensive = openai_teacher(
            "expensive", server.base_url, num_examples=0, price_input_per_1k=10.0, price_output_per_1k=30.0
        )
        study = study_for(run, [expensive, cheap], routing=True, free_eval_problems=0)
        with pytest.raises(
            UserError, match="--teacher nobody: no such teacher; the config has expensive, cheap"
        ):
            run_teach_stage(study, only=["nobody"], progress=False)
        first = run_teach_stage(study, only=["cheap"], progress=False)
        assert list(first) == ["cheap"] and server.prompts_sent() == []
        assert list(read_json(run / "teachers" / "summary.json")) == ["cheap"]
        second = run_teach_stage(study, only=["expensive"], progress=False)
        sent = len(server.prompts_sent())
    assert list(second) == ["expensive"]
    # The cheap teacher's stored rationales still route the expensive one, as in one run of both.
    verified = first["cheap"]["verified"]
    assert 0 < verified < 30 and second["expensive"]["routing"]["asked"] == 30 - verified == sent
    summary = read_json(run / "teachers" / "summary.json")
    assert list(summary) == ["expensive", "cheap"]  # the config's order
    assert summary["cheap"] == json.loads(json.dumps(first["cheap"]))  # kept as the first job wrote it


def test_chat_default_follows_the_backend_and_the_tokenizer(tmp_path, tiny_teacher):
    import shutil

    from transformers import AutoTokenizer

    from scalingdown.config import TeacherConfig
    from scalingdown.teach.stage import uses_chat

    with_template = tmp_path / "instruct"
    shutil.copytree(tiny_teacher, with_template)
    tokenizer = AutoTokenizer.from_pretrained(with_template)
    tokenizer.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    tokenizer.save_pretrained(with_template)

    def teacher(**kw) -> TeacherConfig:
        return TeacherConfig(**{"name": "t", "backend": "hf", "model": str(tiny_teacher), **kw})

    assert not uses_chat(teacher())  # a base model: plain text
    assert uses_chat(teacher(model=str(with_template)))  # an instruct model: its chat template
    assert uses_chat(teacher(backend="openai", model="m"))  # the chat API by default
    assert not uses_chat(teacher(backend="openai", model="m", options={"api": "completions"}))
    assert not uses_chat(teacher(model=str(with_template), chat=False))  # an explicit choice wins
    assert not uses_chat(teacher(backend="replay", model="file.json"))


def test_a_program_teacher_is_verified_by_running_its_programs(tmp_path):
    """`verify: program` on real recorded program rationales (SVAMP), two of them made hostile."""
    from scalingdown.data.schema import Problem
    from tests.conftest import shared_path

    rows = json.loads(shared_path("svamp_reft", "train_python.json").read_text())[:12]
    train = [
        Problem(
            id=r["item_id"], question=r["question"], answer=r["answer_value"], source="svamp", split="train"
        )
        for r in rows
    ]
    programs = [r["answer_cot"] for r in rows]
    programs[3] = "import os\ndef solution():\n    os.system('touch pwned')\n    return 1"
    programs[7] = "def solution():\n    while True:\n        pass"
    book = tmp_path / "programs.jsonl"
    book.write_text(
        "".join(json.dumps({"id": p.id, "text": t}) + "\n" for p, t in zip(train, programs, strict=True))
    )
    run = make_run(tmp_path, train, train[:1])
    teacher = {"name": "pot", "backend": "replay", "model": str(book), "num_examples": 0, "verify": "program"}
    summary = run_teach_stage(study_for(run, [teacher], free_eval_problems=0, policy="flag"), progress=False)[
        "pot"
    ]
    assert summary["categories"]["verified"] == 10 and summary["categories"]["program_failed"] == 2
    assert sum(summary["categories"].values()) == summary["rationales"] == 12
    kept = {r["problem_id"]: r for r in read_jsonl(run / "teachers" / "pot" / "rationales.jsonl")}
    assert kept[train[3].id]["reason"] == "not allowed: imports os (line 1)"
    assert kept[train[7].id]["category"] == "program_failed" and "limit" in kept[train[7].id]["reason"]
    assert kept[train[0].id]["text"] == programs[0].strip() and kept[train[0].id]["answer"] == "203"
    assert read_json(run / "teachers" / "pot" / "stats.json")["categories"] == summary["categories"]
    assert not list(tmp_path.rglob("pwned"))

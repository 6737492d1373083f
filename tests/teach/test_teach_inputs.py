"""The teach stage's inputs and bills (issue 10, items 3 and 13): a local model rebuilt in place is
asked again, not answered from the old model's cache; attempts that were paid for but gave nothing
usable count in the cost; routing orders teachers by what a question is expected to cost them."""

from __future__ import annotations

from pathlib import Path

import pytest

from scalingdown.artifacts import read_json, read_jsonl
from scalingdown.config import TeacherConfig, TinyModelConfig
from scalingdown.config_file import parse_config
from scalingdown.data.schema import write_problems
from scalingdown.data.synthetic import generate
from scalingdown.evaluate.prompts import worked_example
from scalingdown.teach.stage import expected_cost_per_question, run_teach_stage
from tests.teach.fault_server import FaultConfig, FaultServer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _run(tmp_path: Path, n: int = 6) -> Path:
    run = tmp_path / "run"
    write_problems(run / "data" / "train.jsonl", generate(n, seed=7, split="train"))
    write_problems(run / "data" / "test.jsonl", generate(2, seed=8, split="test"))
    return run


def _study(run: Path, teachers: list[dict], **teach):
    return parse_config(
        {"run_dir": str(run), "teachers": teachers, "teach": {"free_eval_problems": 0, **teach}}
    )


def _build(out: Path, seed: int) -> Path:
    from scalingdown.models.tiny import build_tiny

    texts = [worked_example(p) for p in generate(60, seed=5, split="train")]
    config = TinyModelConfig(hidden_size=32, num_layers=2, num_heads=2, vocab_size=300, pretrain_steps=50)
    return build_tiny(config, texts, out, seed=seed, progress=False)


def test_a_local_teacher_rebuilt_in_place_is_asked_again(tmp_path):
    run = _run(tmp_path)
    model = tmp_path / "teacher"
    teacher = {
        "name": "local",
        "backend": "hf",
        "model": str(model),
        "num_examples": 0,
        "sampling": {"temperature": 0.0, "max_tokens": 12},
        "options": {"batch_size": 8},
    }
    _build(model, seed=0)
    first = run_teach_stage(_study(run, [teacher]), progress=False)["local"]
    texts = [r["text"] for r in read_jsonl(run / "teachers" / "local" / "rationales.jsonl")]
    texts += [r["text"] for r in read_jsonl(run / "teachers" / "local" / "rejected.jsonl")]
    assert first["usage"]["rationales"]["requests_sent"] == 6
    _build(model, seed=1)  # the same path, other weights (say, fine-tuned again)
    second = run_teach_stage(_study(run, [teacher]), progress=False)["local"]
    assert second["usage"]["rationales"]["requests_sent"] == 6  # not one answer from the old model
    again = [r["text"] for r in read_jsonl(run / "teachers" / "local" / "rationales.jsonl")]
    again += [r["text"] for r in read_jsonl(run / "teachers" / "local" / "rejected.jsonl")]
    assert again != texts
    third = run_teach_stage(_study(run, [teacher]), progress=False)["local"]
    assert third.get("skipped") and third["usage"]["cost_this_run"] == 0  # unchanged: done


def test_paid_attempts_without_a_usable_answer_count_in_the_cost(tmp_path):
    run = _run(tmp_path)
    with FaultServer(api_key=None, faults=FaultConfig(scripted=("empty",))) as server:
        teacher = {
            "name": "remote",
            "backend": "openai",
            "model": "teacher-7b",
            "num_examples": 0,
            "options": {"base_urls": [server.base_url], "api": "completions", "max_retries": 0},
            "sampling": {"temperature": 0.0, "max_tokens": 32},
            "price_input_per_1k": 1.0,
            "price_output_per_1k": 2.0,
        }
        run_teach_stage(_study(run, [teacher]), progress=False)
        prompt_tokens = sum(len(entry.prompt.split()) for entry in server.log)
    usage = read_json(run / "teachers" / "remote" / "usage.json")
    rationales = usage["rationales"]
    assert rationales["failed"] == 6 and rationales["answered"] == 0
    assert rationales["failure_reasons"] == {"empty completion": 6}
    assert rationales["wasted_prompt_tokens"] == prompt_tokens > 0  # what the server billed
    assert (
        usage["cost"] == pytest.approx(prompt_tokens / 1000 * 1.0) and usage["cost_this_run"] == usage["cost"]
    )


def test_routing_orders_teachers_by_expected_cost_per_question_not_by_summed_prices(tmp_path):
    run = _run(tmp_path, n=4)
    common = {"backend": "openai", "num_examples": 0}
    with (
        FaultServer(model="reader-7b", api_key=None) as cheap_reader,
        FaultServer(model="writer-7b", api_key=None) as cheap_writer,
    ):
        # Prompts here run ~180 tokens, answers at most 8: a low input price is what matters.
        reader = {
            **common,
            "name": "reader",
            "model": "reader-7b",
            "options": {"base_urls": [cheap_reader.base_url], "api": "completions"},
            "sampling": {"temperature": 0.0, "max_tokens": 8},
            "price_input_per_1k": 0.001,
            "price_output_per_1k": 0.1,  # price sum 0.101
        }
        writer = {
            **common,
            "name": "writer",
            "model": "writer-7b",
            "options": {"base_urls": [cheap_writer.base_url], "api": "completions"},
            "sampling": {"temperature": 0.0, "max_tokens": 8},
            "price_input_per_1k": 0.09,
            "price_output_per_1k": 0.001,  # price sum 0.091: first by the old rule
        }
        study = _study(run, [writer, reader], routing=True)
        costs = {t.name: expected_cost_per_question(t, study) for t in study.teachers}
        assert costs["reader"] < costs["writer"]
        run_teach_stage(study, progress=False)
        assert cheap_reader.log[0].started < cheap_writer.log[0].started  # the reader was asked first
    # Once measured, the per-question figure is the measured token mix, failed attempts included.
    measured = read_json(run / "teachers" / "reader" / "usage.json")["rationales"]
    per_question = (measured["prompt_tokens"] * 0.001 + measured["completion_tokens"] * 0.1) / 1000 / 4
    reader_config = TeacherConfig.model_validate(reader)
    assert expected_cost_per_question(reader_config, study) == pytest.approx(per_question)

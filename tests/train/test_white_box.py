"""The white-box KL term (issue 10, item 6): the teacher is scored on its own prompt + the rationale,
the student on its own, over the same target tokens; checked against a plain per-example reference,
and trained through the train stage with a tiny local teacher (which used to crash)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from scalingdown.artifacts import read_json, read_jsonl
from scalingdown.config import TinyModelConfig
from scalingdown.config_file import parse_config
from scalingdown.data.schema import write_problems
from scalingdown.data.synthetic import generate
from scalingdown.evaluate.prompts import worked_example
from scalingdown.teach.stage import run_teach_stage
from scalingdown.train.batching import collate, tokenize_examples
from scalingdown.train.examples import TrainExample
from scalingdown.train.stage import run_train_stage
from scalingdown.train.white_box import WhiteBox, add_teacher_inputs, collate_teacher, white_box_term

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def shared_tokenizer_models(tmp_path_factory):
    """Two tiny Llamas of different widths over one tokenizer (the teacher is the first's build)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from scalingdown.models.tiny import build_model, build_tiny

    texts = [worked_example(p) for p in generate(80, seed=4, split="train")]
    config = TinyModelConfig(hidden_size=32, num_layers=2, num_heads=2, vocab_size=300, pretrain_steps=20)
    teacher_dir = build_tiny(config, texts, tmp_path_factory.mktemp("wb") / "teacher", seed=0, progress=False)
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir).eval()
    student = build_model(
        "llama", tokenizer, hidden_size=16, num_layers=2, num_heads=2, max_positions=512, seed=1
    )
    return tokenizer, student.eval(), teacher


def _reference(student, teacher, tokenizer, examples, teacher_prompts, rows_share):
    """Per example: both models run apart on their own prompt + the target; KL(p_t || p_s) summed by
    hand at each target position; the mean over every target token of the task, times its share."""
    total, tokens = 0.0, 0
    for example, teacher_prompt in zip(examples, teacher_prompts, strict=True):
        target = tokenizer(example.target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        s_prompt = tokenizer(example.prompt)["input_ids"]
        t_prompt = tokenizer(teacher_prompt)["input_ids"]
        with torch.no_grad():
            s_logits = student(input_ids=torch.tensor([s_prompt + target])).logits[0]
            t_logits = teacher(input_ids=torch.tensor([t_prompt + target])).logits[0]
        for k in range(len(target)):
            q = torch.log_softmax(s_logits[len(s_prompt) - 1 + k].double(), -1).tolist()
            p = torch.log_softmax(t_logits[len(t_prompt) - 1 + k].double(), -1).tolist()
            total += sum(math.exp(lp) * (lp - lq) for lp, lq in zip(p, q, strict=True))
            tokens += 1
    return total / tokens * rows_share


def test_the_term_matches_a_per_example_reference(shared_tokenizer_models):
    tokenizer, student, teacher = shared_tokenizer_models
    problems = generate(3, seed=9, split="train")
    teacher_prompts = [
        f"Worked example.\nQuestion: {p.question}\nAnswer: {p.answer}\nReasoning:" for p in problems
    ]
    examples = [
        TrainExample(
            p.id, "rationale:t", f"Explain like t would.\nQuestion: {p.question}\nRationale:", " " + text, tp
        )
        for p, tp, text in zip(
            problems, teacher_prompts, ["3 + 4 = 7.", "It is 12.", "5 x 2 = 10. So 10."], strict=True
        )
    ]
    examples.append(
        TrainExample("a", "answer", "Question: q\nAnswer:", " The answer is 1.")
    )  # not the teacher's
    tokenizer.padding_side = "right"
    features = tokenize_examples(
        examples, tokenizer, max_length=256, is_seq2seq=False, task_index={"answer": 0, "rationale:t": 1}
    )
    add_teacher_inputs(features, [*teacher_prompts, None], tokenizer, {1}, max_length=256)
    batch = collate(features, pad_id=tokenizer.pad_token_id, is_seq2seq=False)
    batch.update(collate_teacher(features, tokenizer.pad_token_id))
    logits = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    got = white_box_term(logits, batch, [WhiteBox(task=1, model=teacher)], "forward_kl", False)
    expected = _reference(student, teacher, tokenizer, examples[:3], teacher_prompts, rows_share=3 / 4)
    assert float(got.detach()) == pytest.approx(expected, rel=1e-4)
    # On the student's own prompt (what the term used to do) the value is a different one.
    wrong = [e.prompt for e in examples[:3]]
    assert _reference(student, teacher, tokenizer, examples[:3], wrong, 3 / 4) != pytest.approx(
        expected, rel=1e-3
    )


def test_a_student_trains_with_the_kl_term_against_a_tiny_local_teacher(tmp_path: Path):
    run = tmp_path / "run"
    train = generate(24, seed=2, split="train", max_steps=1, max_value=9)
    write_problems(run / "data" / "train.jsonl", train)
    write_problems(run / "data" / "test.jsonl", generate(4, seed=3, split="test", max_steps=1, max_value=9))
    tiny = {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "vocab_size": 300, "pretrain_steps": 60}
    teacher = {
        "name": "t",
        "backend": "hf",
        "tiny": tiny,
        "corpus": {"n_train": 150, "templates": "broad", "max_steps": 1, "max_value": 9},
        "num_examples": 0,
        "sampling": {"temperature": 0.0, "max_tokens": 40},
    }
    config = {
        "run_dir": str(run),
        "teachers": [teacher],
        "teach": {"policy": "keep", "free_eval_problems": 0},
        "hyperparameters": {
            "max_steps": 3,
            "batch_size": 8,
            "max_length": 128,
            "log_every": 1,
            "warmup_ratio": 0.0,
        },
    }
    run_teach_stage(parse_config(config), progress=False)
    rows = read_jsonl(run / "teachers" / "t" / "rationales.jsonl")
    assert rows and all(isinstance(r["prompt"], str) and "Question:" in r["prompt"] for r in rows)
    base = str(run / "teachers" / ".models" / "t")  # a student of the teacher's family: one tokenizer
    students = [{"name": f"kl-{w}", "path": base, "method": "full", "kl_weight": w} for w in (0.0, 1.0)]
    summaries = run_train_stage(parse_config({**config, "students": students}), progress=False)
    assert not any("error" in s for s in summaries.values()), summaries
    plain = read_json(run / "students" / "kl-0.0" / "scalingdown.json")["losses"]
    with_kl = read_json(run / "students" / "kl-1.0" / "scalingdown.json")["losses"]
    assert all(math.isfinite(x) for x in with_kl)
    assert with_kl[0] > plain[0]  # the same first batch, plus a positive KL to a different model

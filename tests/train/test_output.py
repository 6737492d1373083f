"""save_student: a saved student loads for evaluation and generates what it generated in memory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from scalingdown.config import LoraSettings
from scalingdown.evaluate.stage import student_template
from scalingdown.models.loading import load_model
from scalingdown.train import output
from scalingdown.train.output import save_student
from scalingdown.train.students import Student, load_student
from tests.train.test_students import build_bases, train_steps

CPU = torch.device("cpu")
LORA = LoraSettings(r=4, alpha=8, dropout=0.0, target_modules="all-linear")
PROMPTS = ["Question: 3 + 4 = ?\nAnswer:", "Question: 12 + 5 = ?\nAnswer:"]


def metadata(**extra) -> dict:
    """What the train stage passes: prompt format, teachers, data hash, losses, config."""
    return {
        "format": "multitask",
        "prompt_template": "Question: {question}\nAnswer:",
        "stop": ["Question:"],
        "teachers": ["alpha", "beta"],
        "task_weights": {"answer": 1.0, "rationale:alpha": 1.0, "rationale:beta": 0.5},
        "data_hash": "0123abcd",
        "final_loss": 1.25,
        "seed": 3,
        **extra,
    }


def greedy(model, tokenizer, prompt: str, is_seq2seq: bool) -> list[int]:
    batch = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=8, do_sample=False)
    return out[0].tolist() if is_seq2seq else out[0, batch["input_ids"].shape[1] :].tolist()


def logits(model, tokenizer, prompt: str, is_seq2seq: bool) -> torch.Tensor:
    batch = tokenizer(prompt, return_tensors="pt")
    if is_seq2seq:
        batch["decoder_input_ids"] = torch.tensor([[model.config.decoder_start_token_id, 5, 6]])
    with torch.no_grad():
        return model(**batch).logits


def trained(base: Path, method: str = "lora") -> Student:
    """A student whose adapter (or weights) moved far enough to change what it predicts."""
    student = load_student(str(base), method=method, lora=LORA, device=CPU)
    train_steps(student, steps=3, lr=5e-2)
    student.model.eval()
    return student


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def bases(tmp_path_factory) -> dict[str, Path]:
    return build_bases(tmp_path_factory.mktemp("bases"))


@pytest.mark.parametrize("arch", ["llama", "t5"])
def test_a_saved_lora_student_loads_merged_and_generates_the_same_tokens(bases, arch, tmp_path):
    student = trained(bases[arch])
    seq2seq = student.is_seq2seq
    out = save_student(student, tmp_path / "student", metadata=metadata())
    assert out == tmp_path / "student"
    names = {p.name for p in out.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "scalingdown.json", "README.md"} <= names
    assert {"tokenizer.json", "tokenizer_config.json"} <= names
    assert "config.json" not in names and "merged" not in names

    loaded = load_model(str(out), device="cpu", dtype="float32")
    assert loaded.is_seq2seq == seq2seq
    assert not any("lora_" in name for name, _ in loaded.model.named_parameters())  # merged, plain model
    base = load_model(str(bases[arch]), device="cpu", dtype="float32")
    assert loaded.num_parameters == base.num_parameters
    for prompt in PROMPTS:
        mine = logits(student.model, student.tokenizer, prompt, seq2seq)
        assert torch.allclose(logits(loaded.model, loaded.tokenizer, prompt, seq2seq), mine, atol=1e-4)
        # The adapter matters: without it the predictions differ, so the check above is not vacuous.
        assert (logits(base.model, base.tokenizer, prompt, seq2seq) - mine).abs().max() > 1e-2
        assert greedy(loaded.model, loaded.tokenizer, prompt, seq2seq) == greedy(
            student.model, student.tokenizer, prompt, seq2seq
        )


def test_merge_writes_full_weights_that_load_without_peft(bases, tmp_path):
    student = trained(bases["llama"])
    out = save_student(student, tmp_path / "student", metadata=metadata(), merge=True)
    merged_dir = out / "merged"
    assert (merged_dir / "config.json").is_file() and (merged_dir / "model.safetensors").is_file()
    assert not (merged_dir / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(merged_dir).eval()
    assert not any("lora_" in name for name, _ in merged.named_parameters())
    for prompt in PROMPTS:
        expected = logits(student.model, student.tokenizer, prompt, False)
        assert torch.allclose(logits(merged, student.tokenizer, prompt, False), expected, atol=1e-4)
    # The eval stage's `--model out/merged --prompt student` finds the format there too.
    assert student_template(merged_dir) == student_template(out)
    # Merging worked on a copy: the in-memory student still has its adapter.
    assert any("lora_" in name for name, _ in student.model.named_parameters())


def test_a_full_student_saves_weights_and_loads(bases, tmp_path):
    student = trained(bases["llama"], method="full")
    out = save_student(student, tmp_path / "student", metadata=metadata(), merge=True)
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "scalingdown.json", "README.md"} <= names
    assert "adapter_config.json" not in names and "merged" not in names  # nothing to merge
    loaded = load_model(str(out), device="cpu", dtype="float32")
    for prompt in PROMPTS:
        expected = logits(student.model, student.tokenizer, prompt, False)
        assert torch.allclose(logits(loaded.model, loaded.tokenizer, prompt, False), expected, atol=1e-5)


def test_metadata_is_read_back_by_the_eval_stage(bases, tmp_path):
    student = load_student(str(bases["llama"]), method="lora", lora=LORA, device=CPU)
    given = metadata(method="ignored", base_model="tiny")
    out = save_student(student, tmp_path / "student", metadata=given)
    meta = student_template(out)
    assert meta["prompt_template"] == given["prompt_template"] and meta["stop"] == ["Question:"]
    assert meta["teachers"] == ["alpha", "beta"] and meta["data_hash"] == "0123abcd"
    # The student's own facts win over equal keys in the given metadata.
    assert meta["method"] == "lora" and meta["base_model"] == student.base_model
    assert meta["trainable_parameters"] == student.trainable_parameters
    assert meta["total_parameters"] == student.total_parameters
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert Path(adapter["base_model_name_or_path"]) == bases["llama"].resolve()


def test_the_model_card_says_what_it_is_and_how_to_evaluate_it(bases, tmp_path):
    student = load_student(str(bases["t5"]), method="lora", lora=LORA, device=CPU)
    card = (save_student(student, tmp_path / "s", metadata=metadata()) / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: peft\n")
    assert f"Base model: `{student.base_model}`" in card and "Method: lora" in card
    assert "`alpha`, `beta`" in card and "0123abcd" in card
    assert "scalingdown eval --model DIR --prompt student" in card
    assert "| final_loss | 1.25 |" in card and "| seed | 3 |" in card
    assert f"{student.total_parameters:,} total" in card


def test_a_failed_save_leaves_the_previous_student_intact(bases, tmp_path, monkeypatch):
    student = load_student(str(bases["llama"]), method="lora", lora=LORA, device=CPU)
    out = save_student(student, tmp_path / "student", metadata=metadata(data_hash="first"))
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def crash(meta):  # the adapter, tokenizer and metadata are already written when the card fails
        raise RuntimeError("disk full")

    monkeypatch.setattr(output, "model_card", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        save_student(student, out, metadata=metadata(data_hash="second"))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["student"]  # no temporary left behind

    monkeypatch.undo()
    save_student(student, out, metadata=metadata(data_hash="second"))
    assert student_template(out)["data_hash"] == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["student"]


@pytest.mark.parametrize("method", ["lora", "full"])
def test_gathered_weights_are_saved_instead_of_the_model_objects_own(bases, tmp_path, method):
    """After FSDP or DeepSpeed the model object holds a shard; the stage passes the gathered weights."""
    holder = load_student(str(bases["llama"]), method=method, lora=LORA, device=CPU)  # untrained
    gathered = trained(bases["llama"], method=method)
    state_dict = {k: v.clone() for k, v in gathered.model.state_dict().items()}
    out = save_student(holder, tmp_path / "student", metadata=metadata(), state_dict=state_dict)
    loaded = load_model(str(out), device="cpu", dtype="float32")
    holder.model.eval()
    prompt = PROMPTS[0]
    saved = logits(loaded.model, loaded.tokenizer, prompt, False)
    assert torch.allclose(saved, logits(gathered.model, gathered.tokenizer, prompt, False), atol=1e-5)
    assert not torch.allclose(saved, logits(holder.model, holder.tokenizer, prompt, False), atol=1e-3)

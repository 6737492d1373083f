"""load_model: causal and seq2seq models from a directory, and one-line errors for bad names."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
import torch

from scalingdown.config import TinyModelConfig
from scalingdown.errors import UserError
from scalingdown.models.loading import LoadedModel, load_model
from scalingdown.models.tiny import build_tiny
from tests.models.test_pretrain import addition_texts

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("models")
    texts = addition_texts(100)
    for arch in ("llama", "t5"):
        config = TinyModelConfig(arch=arch, hidden_size=32, vocab_size=300, pretrain_steps=30)
        build_tiny(config, texts, root / arch, seed=0, progress=False)
    return root


def test_loads_a_causal_model_ready_for_batched_generation(models_dir):
    loaded = load_model(str(models_dir / "llama"))
    assert isinstance(loaded, LoadedModel)
    assert not loaded.is_seq2seq
    assert loaded.tokenizer.padding_side == "left"
    assert loaded.tokenizer.pad_token_id is not None
    assert not loaded.model.training
    expected_device = "cuda" if torch.cuda.is_available() else "cpu"
    assert loaded.device.type == expected_device == next(loaded.model.parameters()).device.type
    assert loaded.dtype == next(loaded.model.parameters()).dtype
    assert loaded.num_parameters == sum(p.numel() for p in loaded.model.parameters())
    assert loaded.name_or_path == str(models_dir / "llama")


def test_left_padded_batch_generates_what_each_prompt_generates_alone(models_dir):
    loaded = load_model(str(models_dir / "llama"), device="cpu")
    model, tokenizer = loaded.model, loaded.tokenizer
    prompts = ["Question: 3 + 4 = ?\nAnswer:", "Question: 12 + 5 = ? and then 1 + 1 = ?\nAnswer:"]
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    assert batch["attention_mask"][0, 0] == 0  # the shorter prompt is padded on the left
    together = model.generate(**batch, max_new_tokens=6, do_sample=False)[:, batch["input_ids"].shape[1] :]
    for row, prompt in enumerate(prompts):
        alone = tokenizer(prompt, return_tensors="pt")
        single = model.generate(**alone, max_new_tokens=6, do_sample=False)[0, alone["input_ids"].shape[1] :]
        assert together[row, : len(single)].tolist() == single.tolist()


def test_loads_a_seq2seq_model(models_dir):
    loaded = load_model(str(models_dir / "t5"), device="cpu", dtype="float32")
    assert loaded.is_seq2seq
    assert loaded.dtype == torch.float32
    assert loaded.model.config.is_encoder_decoder
    batch = loaded.tokenizer(["Question: 3 + 4 = ?\nAnswer:"], return_tensors="pt")
    out = loaded.model.generate(**batch, max_new_tokens=4, do_sample=False)
    assert out.shape[0] == 1 and out.shape[1] >= 2


def test_explicit_dtype_is_applied(models_dir):
    loaded = load_model(str(models_dir / "llama"), device="cpu", dtype="bfloat16")
    assert loaded.dtype == torch.bfloat16
    assert all(p.dtype == torch.bfloat16 for p in loaded.model.parameters())


def test_missing_pad_token_falls_back_to_eos(models_dir, tmp_path):
    copy = tmp_path / "nopad"
    shutil.copytree(models_dir / "llama", copy)
    config_path = copy / "tokenizer_config.json"
    tokenizer_config = json.loads(config_path.read_text())
    del tokenizer_config["pad_token"]
    config_path.write_text(json.dumps(tokenizer_config))
    loaded = load_model(str(copy), device="cpu")
    assert loaded.tokenizer.pad_token == loaded.tokenizer.eos_token == "</s>"
    assert loaded.model.generation_config.pad_token_id is not None


def test_bad_device_and_dtype_are_user_errors(models_dir):
    with pytest.raises(UserError, match="dtype"):
        load_model(str(models_dir / "llama"), dtype="float64")
    with pytest.raises(UserError, match="device"):
        load_model(str(models_dir / "llama"), device="not-a-device")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA GPU"):
            load_model(str(models_dir / "llama"), device="cuda")


def test_missing_local_path(tmp_path):
    missing = tmp_path / "runs" / "x" / "model"
    with pytest.raises(UserError, match="no such model directory") as info:
        load_model(str(missing))
    assert str(missing) in str(info.value)


def test_empty_name_is_refused():
    with pytest.raises(UserError, match="empty"):
        load_model("  ")


def test_directory_without_config_json(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "weights.bin").write_bytes(b"\0")
    with pytest.raises(UserError, match=r"model: not a Hugging Face model directory \(no config.json\)"):
        load_model(str(tmp_path / "model"))


def test_a_file_is_not_a_model_directory(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"\0")
    with pytest.raises(UserError, match="not a Hugging Face model directory"):
        load_model(str(path))


def test_unknown_model_type(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "no_such_architecture"}))
    with pytest.raises(UserError, match="do not know") as info:
        load_model(str(tmp_path))
    assert str(tmp_path) in str(info.value)


def test_a_config_that_is_not_a_language_model(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "vit"}))
    with pytest.raises(UserError, match="cannot load as a language model"):
        load_model(str(tmp_path))


def test_weights_missing(models_dir, tmp_path):
    copy = tmp_path / "noweights"
    shutil.copytree(models_dir / "llama", copy)
    (copy / "model.safetensors").unlink()
    with pytest.raises(UserError, match="incomplete model directory"):
        load_model(str(copy))


def test_hub_id_offline_fails_fast_with_advice(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    with pytest.raises(UserError) as info:
        load_model("no-such-org/no-such-model")
    assert time.perf_counter() - started < 5
    message = str(info.value)
    assert message.startswith("no-such-org/no-such-model: ")
    assert "could not be fetched" in message and "local" in message
    assert "\n" not in message


def test_a_bare_name_is_not_tried_on_the_hub(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="no such model directory"):
        load_model("definitely-not-a-local-dir")


def _save_adapter(base_dir: Path, out: Path, *, seq2seq: bool = False) -> torch.nn.Module:
    """A LoRA adapter on `base_dir` with non-zero B matrices (so it changes the output), saved to
    `out` with the tokenizer the way a trained student is; returns the in-memory PEFT model."""
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    auto_class = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
    model = auto_class.from_pretrained(str(base_dir))
    task = TaskType.SEQ_2_SEQ_LM if seq2seq else TaskType.CAUSAL_LM
    peft_model = get_peft_model(
        model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type=task)
    )
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    peft_model.save_pretrained(out)
    AutoTokenizer.from_pretrained(str(base_dir)).save_pretrained(out)
    return peft_model.eval()


@pytest.mark.parametrize("arch", ["llama", "t5"])
def test_a_lora_adapter_directory_loads_as_its_base_with_the_adapter_merged(models_dir, tmp_path, arch):
    adapter_dir = tmp_path / "student"
    peft_model = _save_adapter(models_dir / arch, adapter_dir, seq2seq=arch == "t5")
    assert not (adapter_dir / "config.json").exists()
    loaded = load_model(str(adapter_dir), device="cpu", dtype="float32")
    base = load_model(str(models_dir / arch), device="cpu", dtype="float32")
    assert loaded.is_seq2seq == (arch == "t5")
    assert loaded.tokenizer.padding_side == ("right" if arch == "t5" else "left")
    assert not loaded.model.training
    assert not any("lora_" in name for name, _ in loaded.model.named_parameters())
    assert loaded.num_parameters == base.num_parameters == sum(p.numel() for p in loaded.model.parameters())
    assert loaded.name_or_path == str(adapter_dir)
    batch = loaded.tokenizer(["Question: 3 + 4 = ?\nAnswer:"], return_tensors="pt")
    if arch == "t5":
        batch["decoder_input_ids"] = torch.tensor([[loaded.model.config.decoder_start_token_id, 7]])
    with torch.no_grad():
        merged, adapted, plain = (m(**batch).logits for m in (loaded.model, peft_model, base.model))
    assert torch.allclose(merged, adapted, atol=1e-4)
    assert (merged - plain).abs().max() > 1e-2  # the adapter is really applied


def test_an_adapter_finds_a_relative_base_from_its_own_directory(models_dir, tmp_path, monkeypatch):
    shutil.copytree(models_dir / "llama", tmp_path / "base")
    adapter_dir = tmp_path / "students" / "s"
    _save_adapter(tmp_path / "base", adapter_dir)
    config_path = adapter_dir / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = "../../base"
    config_path.write_text(json.dumps(config))
    monkeypatch.chdir(models_dir)  # not where the relative path starts
    loaded = load_model(str(adapter_dir), device="cpu")
    assert not loaded.is_seq2seq


def test_an_adapter_whose_base_is_gone_names_both(models_dir, tmp_path):
    shutil.copytree(models_dir / "llama", tmp_path / "base")
    adapter_dir = tmp_path / "student"
    _save_adapter(tmp_path / "base", adapter_dir)
    shutil.rmtree(tmp_path / "base")
    with pytest.raises(UserError) as info:
        load_model(str(adapter_dir), device="cpu")
    message = str(info.value)
    assert message.startswith(f"{adapter_dir}: ")
    assert str(tmp_path / "base") in message and "cannot be found" in message
    assert "\n" not in message


def test_an_adapter_whose_base_fails_to_load_names_both(models_dir, tmp_path):
    shutil.copytree(models_dir / "llama", tmp_path / "base")
    adapter_dir = tmp_path / "student"
    _save_adapter(tmp_path / "base", adapter_dir)
    (tmp_path / "base" / "model.safetensors").unlink()
    with pytest.raises(UserError) as info:
        load_model(str(adapter_dir), device="cpu")
    message = str(info.value)
    assert message.startswith(f"{adapter_dir}: cannot load the adapter's base model: {tmp_path / 'base'}: ")
    assert "incomplete model directory" in message

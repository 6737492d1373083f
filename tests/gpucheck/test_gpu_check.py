"""scripts/gpu_check.sh: its --cpu-smoke mode end to end, its budget and failure paths, and its parts
(shapes, tokenizer, FLOPs, peak table). The GPU figures themselves need a GPU and are not tested here."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from scalingdown.gpucheck.flops import forward_flops_per_token, peak_tflops, training_flops_per_token
from scalingdown.gpucheck.shapes import SHAPES, build_random_model, count_parameters, random_prompts

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "gpu_check.sh"
SECTIONS = ["build", "vllm_teacher", "hf_teacher", "hf_student", "lora_student"]


def run_check(tmp: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict | None]:
    out = tmp / "figures.json"
    env = {**os.environ, "PYTHON": sys.executable, "TQDM_DISABLE": "1"}
    done = subprocess.run(
        ["bash", str(SCRIPT), "--out", str(out), *args],
        capture_output=True, text=True, env=env, timeout=240,
    )  # fmt: skip
    return done, (json.loads(out.read_text()) if out.is_file() else None)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gpu_check")
    return run_check(tmp, "--cpu-smoke", "--work-dir", str(tmp / "models"))


def test_script_is_valid_bash():
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0


@pytest.mark.slow  # the whole GPU check on a CPU: minutes of the default run's budget
def test_cpu_smoke_measures_every_section(smoke):
    done, figures = smoke
    assert done.returncode == 0, done.stderr[-2000:]
    assert figures["mode"] == "cpu-smoke" and figures["complete"] is True
    assert list(figures["sections"]) == SECTIONS
    assert figures["device"]["type"] == "cpu" and figures["device"]["torch"] == torch.__version__
    shape = SHAPES["smoke"]
    for name in ("hf_teacher", "hf_student"):
        gen = figures["sections"][name]
        assert "error" not in gen, gen
        # A random model may end a row early on an end-of-sequence id, never generate more than asked.
        assert 0 < gen["generated_tokens"] <= gen["prompts"] * gen["max_new_tokens"]
        assert gen["tokens_per_second"] == pytest.approx(gen["generated_tokens"] / gen["seconds"], rel=0.02)
    train = figures["sections"]["lora_student"]
    assert "error" not in train, train
    assert train["mixed_precision"] == "no"  # no bf16 autocast on the CPU
    assert math.isfinite(train["loss_first"]) and math.isfinite(train["loss_last"])
    assert 0 < train["trainable_parameters"] < train["parameters"]
    assert train["tokens_per_second"] == pytest.approx(
        train["batch_size"] * train["seq_len"] / train["step_seconds"], rel=0.02
    )
    assert train["mfu"] is None and train["peak_tflops"] is None  # no GPU peak to divide by
    # LoRA r adapters on every linear layer of every block: (in + out) * r weights each.
    h, kv = shape.hidden_size, shape.num_key_value_heads * shape.hidden_size // shape.num_attention_heads
    i, r = shape.intermediate_size, train["lora"]["r"]
    per_layer = r * ((h + h) * 2 + (h + kv) * 2 + (h + i) * 3)
    assert train["trainable_parameters"] == shape.num_hidden_layers * per_layer
    vllm = figures["sections"]["vllm_teacher"]
    try:
        import vllm as _  # noqa: F401

        assert "tokens_per_second" in vllm or "error" in vllm
    except ImportError:
        assert "pip install scalingdown[vllm]" in vllm["skipped"]


@pytest.mark.slow  # the whole GPU check on a CPU: minutes of the default run's budget
def test_figures_are_written_after_each_section_and_a_failed_build_skips_the_rest(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the models should go")
    done, figures = run_check(tmp_path, "--cpu-smoke", "--work-dir", str(blocker))
    assert done.returncode == 1
    assert "error" in figures["sections"]["build"]
    for name in SECTIONS[1:]:
        assert figures["sections"][name] == {"skipped": "the models could not be built"}


@pytest.mark.slow  # the whole GPU check on a CPU: minutes of the default run's budget
def test_a_spent_budget_skips_sections_and_says_why(tmp_path):
    done, figures = run_check(tmp_path, "--cpu-smoke", "--budget-seconds", "0", "--work-dir", str(tmp_path))
    assert done.returncode == 0 and figures["complete"] is True
    for name in SECTIONS:
        assert figures["sections"][name]["skipped"].startswith("time budget: 0 s left")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message a machine without a GPU gets")
def test_gpu_mode_without_a_gpu_is_one_line_and_exit_2(tmp_path):
    done, figures = run_check(tmp_path, "--work-dir", str(tmp_path))
    assert done.returncode == 2 and figures is None
    assert done.stderr.strip().count("\n") == 0 and "--cpu-smoke" in done.stderr


@pytest.mark.parametrize(("shape", "published"), [("qwen2.5-0.5b", 0.49e9), ("qwen2.5-1.5b", 1.54e9)])
def test_real_shapes_have_the_published_sizes(shape, published):
    # Qwen2.5 model cards: "Number of Parameters: 0.49B" and "1.54B" (embeddings included, tied).
    assert count_parameters(SHAPES[shape]) == pytest.approx(published, rel=0.01)


def test_word_tokenizer_round_trips_through_auto_tokenizer(tmp_path):
    shape = SHAPES["smoke"]
    folder = build_random_model(shape, tmp_path / "m", device=torch.device("cpu"), dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    prompts = random_prompts(3, 17, shape.vocab_size, seed=5)
    ids = tokenizer(prompts)["input_ids"]
    assert [len(row) for row in ids] == [17, 17, 17]
    assert all(3 <= i < shape.vocab_size for row in ids for i in row)
    assert tokenizer.decode(ids[0]) == prompts[0]
    # Any id the model may generate decodes to text, the highest included.
    assert tokenizer.decode([shape.vocab_size - 1]) == f"t{shape.vocab_size - 1}"
    # A second build with the same shape and dtype reuses the folder.
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    build_random_model(shape, folder, device=torch.device("cpu"), dtype=torch.float32)
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp


def test_flops_per_token_count_every_multiply_and_attention(tmp_path):
    shape = SHAPES["smoke"]
    model = AutoModelForCausalLM.from_config(shape.config())
    h, layers, v, i = shape.hidden_size, shape.num_hidden_layers, shape.vocab_size, shape.intermediate_size
    kv = shape.num_key_value_heads * h // shape.num_attention_heads
    weights = layers * (2 * h * h + 2 * h * kv + 3 * h * i) + v * h  # blocks + output head
    context = 128
    forward = 2 * weights + 4 * layers * context * h
    assert forward_flops_per_token(model, context) == forward
    assert training_flops_per_token(model, context, trainable=0, lora=False) == 3 * forward
    assert training_flops_per_token(model, context, trainable=1000, lora=True) == 2 * forward + 2000


@pytest.mark.parametrize(
    ("name", "peak"),
    [
        ("NVIDIA H200", 989.4),
        ("NVIDIA H100 80GB HBM3", 989.4),
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("NVIDIA A10G", 70.0),
        ("NVIDIA A10", 125.0),
        ("NVIDIA L40S", 362.1),
        ("NVIDIA L4", 121.0),
        ("Tesla T4", None),
    ],
)
def test_peak_table_matches_the_most_specific_name(name, peak):
    assert peak_tflops(name) == peak


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_run_measures_every_section_within_its_budget(tmp_path):
    """The real check on a GPU (`pytest -m gpu`): every section measured, figures physically possible."""
    done, figures = run_check(tmp_path, "--work-dir", str(tmp_path / "models"))
    assert done.returncode == 0, done.stderr[-3000:]
    sections = figures["sections"]
    assert figures["seconds"] <= figures["budget_seconds"] + 30
    for name in ("hf_teacher", "hf_student", "lora_student"):
        assert sections[name]["tokens_per_second"] > 0, sections[name]
    train = sections["lora_student"]
    assert train["mixed_precision"] == "bf16" and train["loss_last"] < train["loss_first"] + 1
    if train["mfu"] is not None:
        assert 0 < train["mfu"] < 1
    # The student is 3x smaller than the teacher: the same engine generates faster on it.
    assert sections["hf_student"]["tokens_per_second"] > sections["hf_teacher"]["tokens_per_second"]
    if "tokens_per_second" in sections["vllm_teacher"]:
        assert sections["vllm_teacher"]["failed_requests"] == 0
        assert figures["vllm_over_hf_teacher"] > 1

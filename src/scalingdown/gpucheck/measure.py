"""The GPU check's measurements: generation through `hf` and `vllm`, LoRA training with bf16.

Each function loads what it needs, measures after a warm-up (the first CUDA call, kernel selection
and memory pools are not the steady state a study spends its hours in), frees the GPU again and
returns a flat dict of figures. Times are wall-clock with the device synchronised; tokens/s counts
generated (or trained) tokens only, prompts not included.

- `hf_generation`: `scalingdown.evaluate.generation.generate_texts`, the engine of `scalingdown eval`
  and of the `hf` teacher backend, greedy, batched, KV cache, weights in bf16 on a GPU.
- `lora_training`: the student as `scalingdown train` loads it (`train.students.load_student`, LoRA
  from configs/lora_config.json, float32 weights), wrapped by Accelerate with the same mixed precision
  setting (bf16 autocast on a GPU that has it), the same TinyLLM loss and gradient clipping, AdamW;
  fixed-length random batches so every token is a real one. Data loading, logging and checkpoints are
  left out: this is the step's speed.
- `vllm_generation`: the `vllm` teacher backend in a child process (`gpucheck.vllm_probe`) with a
  timeout, so a hung engine cannot stall the check and its memory is returned when the child exits.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from scalingdown.evaluate.efficiency import package_versions, peak_memory, reset_peak_memory
from scalingdown.gpucheck.flops import mfu, peak_tflops, training_flops_per_token
from scalingdown.gpucheck.shapes import SPECIALS, random_prompts
from scalingdown.gpucheck.vllm_probe import RESULT_MARKER


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_gb(device: torch.device) -> float | None:
    """CUDA's max allocated since `reset_peak_memory`, in GiB; None on the CPU (whose figure would be
    the whole process's RSS, not the model's)."""
    return round(peak_memory(device)["bytes"] / 2**30, 2) if device.type == "cuda" else None


def _free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def hf_generation(
    model_dir: Path,
    *,
    device: torch.device,
    prompts: int,
    prompt_tokens: int,
    new_tokens: int,
    batch_size: int,
) -> dict:
    """Greedy generation tokens/s of `scalingdown eval`'s engine on the model in `model_dir`."""
    from scalingdown.evaluate.generation import DecodingSettings, generate_texts
    from scalingdown.models.loading import load_model

    loaded = load_model(str(model_dir), device=str(device), dtype="auto")
    texts = random_prompts(prompts, prompt_tokens, loaded.model.config.vocab_size, seed=1)
    generate_texts(loaded, texts[:1], DecodingSettings(max_new_tokens=4, batch_size=1), progress=False)
    reset_peak_memory(device)
    _sync(device)
    started = time.perf_counter()
    settings = DecodingSettings(max_new_tokens=new_tokens, batch_size=batch_size)
    generations = generate_texts(loaded, texts, settings, progress=False)
    _sync(device)
    seconds = time.perf_counter() - started
    generated = sum(g.new_tokens[0] for g in generations if g is not None)
    result = {
        "parameters": loaded.num_parameters,
        "dtype": str(loaded.dtype).removeprefix("torch."),
        "prompts": prompts,
        "prompt_tokens": prompt_tokens,
        "max_new_tokens": new_tokens,
        "batch_size": batch_size,
        "generated_tokens": generated,
        "seconds": round(seconds, 6),  # tokens_per_second is computed from it: keep it precise
        "tokens_per_second": round(generated / seconds, 1),
        "peak_memory_gb": _peak_gb(device),
    }
    del loaded, generations
    _free()
    return result


def lora_training(
    model_dir: Path,
    *,
    device: torch.device,
    seq_len: int,
    batch_size: int,
    steps: int,
    warmup: int,
    peak: float | None,
) -> dict:
    """Tokens/s, step time, peak memory and MFU of LoRA training steps as `scalingdown train` runs them."""
    from accelerate import Accelerator

    from scalingdown.config import Hyperparameters, LoraSettings, shipped_training_defaults
    from scalingdown.train.loop import mixed_precision
    from scalingdown.train.objective import IGNORE_INDEX, example_losses, multitask_loss
    from scalingdown.train.students import load_student

    lora_defaults, hp_defaults = shipped_training_defaults()  # what a study starts from
    lora, hp = LoraSettings.model_validate(lora_defaults), Hyperparameters.model_validate(hp_defaults)
    student = load_student(str(model_dir), method="lora", lora=lora, device=device)
    precision = mixed_precision("auto")
    accelerator = Accelerator(cpu=device.type != "cuda", mixed_precision=precision)
    params = [p for p in student.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=hp.learning_rate, weight_decay=hp.weight_decay)
    model, optimizer = accelerator.prepare(student.model, optimizer)
    params = [p for p in model.parameters() if p.requires_grad]  # as train.loop: after prepare

    generator = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size
    ids = torch.randint(len(SPECIALS), vocab, (batch_size, seq_len), generator=generator).to(
        accelerator.device
    )
    labels = ids.clone()
    labels[:, : seq_len // 4] = IGNORE_INDEX  # the prompt part of a TinyLLM example is not learned
    mask = torch.ones_like(ids)
    weights = torch.ones(batch_size, device=accelerator.device)

    losses, times = [], []
    reset_peak_memory(device)
    model.train()
    for step in range(warmup + steps):
        _sync(device)
        started = time.perf_counter()
        logits = model(input_ids=ids, attention_mask=mask).logits
        loss = multitask_loss(example_losses(logits, labels, shift=True), weights)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(params, hp.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())  # .item() waits for the step, so the time below is the step's
        _sync(device)
        if step >= warmup:
            times.append(time.perf_counter() - started)
    seconds = sum(times)
    tokens_per_second = batch_size * seq_len * steps / seconds
    flops = training_flops_per_token(model, seq_len, trainable=student.trainable_parameters, lora=True)
    share = mfu(tokens_per_second, flops, peak)
    result = {
        "parameters": student.total_parameters,
        "trainable_parameters": student.trainable_parameters,
        "lora": lora.model_dump(),
        "mixed_precision": precision,
        "seq_len": seq_len,
        "batch_size": batch_size,
        "warmup_steps": warmup,
        "steps": steps,
        "step_seconds": round(seconds / steps, 6),
        "tokens_per_second": round(tokens_per_second, 1),
        "flops_per_token": flops,
        "achieved_tflops": round(tokens_per_second * flops / 1e12, 2),
        "peak_tflops": peak,
        "mfu": None if share is None else round(share, 4),
        "loss_first": round(losses[0], 4),
        "loss_last": round(losses[-1], 4),
        "peak_memory_gb": _peak_gb(device),
    }
    del model, optimizer, student, accelerator, logits, loss
    _free()
    return result


def vllm_generation(
    model_dir: Path, *, prompts: int, prompt_tokens: int, new_tokens: int, eager: bool, timeout: float
) -> dict:
    """Run `gpucheck.vllm_probe` in a child process; its JSON figures, or why there are none."""
    command = [
        sys.executable, "-m", "scalingdown.gpucheck.vllm_probe", str(model_dir),
        "--prompts", str(prompts), "--prompt-tokens", str(prompt_tokens), "--new-tokens", str(new_tokens),
    ]  # fmt: skip
    if eager:
        command.append("--eager")
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"the vLLM child process ran past its {timeout:.0f} s share of the time budget"}
    # vLLM logs to stdout too, possibly after our line (shutdown messages): find ours by its marker.
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(RESULT_MARKER):
            return json.loads(line[len(RESULT_MARKER) :])
    tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
    return {"error": f"the vLLM child process exited with code {done.returncode}: {tail}"}


def device_facts(device: torch.device) -> dict:
    """What the figures were measured on: the GPU (or CPU) and the versions of the stack."""
    facts: dict = {"type": device.type}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        facts.update(
            name=props.name,
            count=torch.cuda.device_count(),
            memory_gb=round(props.total_memory / 2**30, 1),
            capability=f"{props.major}.{props.minor}",
            bf16=torch.cuda.is_bf16_supported(),
            cuda=torch.version.cuda,
            peak_bf16_tflops=peak_tflops(props.name),
        )
    else:
        import platform

        facts.update(name=platform.processor() or platform.machine(), threads=torch.get_num_threads())
    facts.update(package_versions(("scalingdown", "torch", "transformers", "peft", "accelerate", "vllm")))
    return facts

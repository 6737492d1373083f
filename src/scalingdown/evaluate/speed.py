"""Latency, throughput and peak memory of one model, measured on their own in a fresh process.

The evaluation's own wall time is a poor speed figure: it includes the first batch's warm-up, other
models loaded earlier in the same process and whatever else the machine did meanwhile (on a loaded
machine a 157K-parameter student once timed slower than a 334K one). So each model is measured
apart, in a child process that loads only it:

- warm-up: one pass over the prompts, not timed;
- `passes` timed passes, each answering the same prompts one at a time (latency per question, as a
  user waiting for one answer sees it) and then all together in one batch (throughput, as a server
  sees it);
- reported: the median over passes and the spread (min..max) of seconds per question at batch 1,
  questions/s and generated tokens/s batched, and the child's peak memory: CUDA's max allocated on
  a GPU, else the process's max RSS, beside the RSS right after the imports (the part that is the
  interpreter and libraries, not the model) and the weights' own bytes.

Generation is greedy with the evaluation's stop strings and max_new_tokens: the cost of answering
as the model answers. A question asked in several prompts (a student's `vote`: one per mode) gives
`prompts_per_question`, and the per-question figures count all of its prompts. Run
`python -m scalingdown.evaluate.speed` with a JSON request on stdin; the parent (`measure_speed`)
reads one JSON line from stdout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from statistics import median

from scalingdown.errors import UserError

MARKER = "SCALINGDOWN_SPEED "  # the result line among whatever libraries print


@dataclass
class SpeedRequest:
    model_path: str
    prompts: list[str]
    max_new_tokens: int
    stop: list[str]
    device: str = "auto"
    dtype: str = "auto"
    quantize: str | None = None
    passes: int = 3
    threads: int | None = None  # torch threads in the child (None: torch's default)
    prompts_per_question: int = 1  # a vote asks each question in every mode: its prompts in a row


def _rss_bytes() -> int:
    import resource

    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def _current_rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return _rss_bytes()


def _run(request: SpeedRequest) -> dict:
    """In the child: load, warm up, time; returns the figures."""
    import time

    import torch

    if request.threads:
        torch.set_num_threads(request.threads)
    from scalingdown.evaluate.generation import DecodingSettings, generate_texts
    from scalingdown.evaluate.quantize import bitsandbytes_config, memory_bytes, quantise_int8
    from scalingdown.models.loading import load_model

    baseline = _current_rss_bytes()
    bnb = request.quantize in ("int8-bnb", "nf4")
    config = bitsandbytes_config(request.quantize) if bnb else None
    loaded = load_model(
        request.model_path, device=request.device, dtype=request.dtype, quantization_config=config
    )
    if request.quantize == "int8":
        loaded.model, _ = quantise_int8(loaded.model)
    cuda = loaded.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(loaded.device)

    def settings(batch: int) -> DecodingSettings:
        return DecodingSettings(
            max_new_tokens=request.max_new_tokens, stop=tuple(request.stop), batch_size=batch
        )

    def timed(batch: int) -> tuple[float, int]:
        if cuda:
            torch.cuda.synchronize(loaded.device)
        started = time.perf_counter()
        generations = generate_texts(loaded, request.prompts, settings(batch), progress=False)
        if cuda:
            torch.cuda.synchronize(loaded.device)
        tokens = sum(sum(g.new_tokens) for g in generations if g is not None)
        return time.perf_counter() - started, tokens

    timed(len(request.prompts))  # warm-up: kernels, caches, allocator
    questions = len(request.prompts) / request.prompts_per_question
    single, batched = [], []
    for _ in range(request.passes):
        seconds, _ = timed(1)
        single.append(seconds / questions)
        seconds, tokens = timed(len(request.prompts))
        batched.append((seconds, tokens))
    peak = int(torch.cuda.max_memory_allocated(loaded.device)) if cuda else _rss_bytes()
    return {
        "prompts": len(request.prompts),
        "prompts_per_question": request.prompts_per_question,
        "passes": request.passes,
        "seconds_per_question": median(single),
        "seconds_per_question_min": min(single),
        "seconds_per_question_max": max(single),
        "questions_per_second_batched": median(questions / s for s, _ in batched),
        "tokens_per_second_batched": median(t / s for s, t in batched),
        "peak_memory_bytes": peak,
        "peak_memory_kind": "cuda_max_allocated" if cuda else "process_max_rss",
        "baseline_rss_bytes": baseline,
        "weight_bytes": memory_bytes(loaded.model),
        "device": str(loaded.device),
        "torch_threads": torch.get_num_threads(),
    }


def measure_speed(request: SpeedRequest, *, timeout_s: float = 3600) -> dict:
    """Run the measurement in a fresh Python process; a failure there is one `UserError` line."""
    env = {**os.environ, "TQDM_DISABLE": "1"}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "scalingdown.evaluate.speed"],
            input=json.dumps(request.__dict__),
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired:
        raise UserError(f"speed measurement of {request.model_path} took over {timeout_s:.0f} s") from None
    for line in done.stdout.splitlines():
        if line.startswith(MARKER):
            return json.loads(line[len(MARKER) :])
    last = (done.stderr.strip().splitlines() or ["no output"])[-1]
    raise UserError(f"speed measurement failed (exit {done.returncode}): {last}", path=request.model_path)


def main() -> None:
    request = SpeedRequest(**json.loads(sys.stdin.read()))
    try:
        result = _run(request)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    print(MARKER + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()

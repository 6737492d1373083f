"""`python -m scalingdown.gpucheck` (what scripts/gpu_check.sh runs): see the package docstring.

Sections run in this order, each skipped when the time budget no longer holds its usual length:
build the models, vLLM teacher generation, hf teacher generation, hf student generation, LoRA
student training. The JSON file is rewritten after each, with "complete": false until the end.
Exit status: 0 when every section that ran succeeded (vLLM not installed counts as skipped, not
failed), 1 when one failed, 2 for a usage error (no GPU without --cpu-smoke).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is built here; nothing is fetched
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@dataclass(frozen=True)
class Plan:
    """Sizes of one run: real-size models on a GPU, tiny ones on the CPU (--cpu-smoke)."""

    student: str
    teacher: str
    dtype: str
    gen_prompts: int
    gen_prompt_tokens: int
    gen_new_tokens: int
    gen_batch: int
    vllm_prompts: int
    vllm_new_tokens: int
    train_seq_len: int
    train_batch: int
    train_steps: int
    train_warmup: int
    need_seconds: dict  # section -> seconds it usually takes; skipped when less is left


GPU_PLAN = Plan(
    "qwen2.5-0.5b", "qwen2.5-1.5b", "bfloat16", 64, 128, 128, 32, 256, 256, 512, 8, 10, 3,
    {"build": 40, "vllm_teacher": 90, "hf_teacher": 30, "hf_student": 20, "lora_student": 30},
)  # fmt: skip
SMOKE_PLAN = Plan(
    "smoke", "smoke", "float32", 4, 16, 8, 2, 4, 8, 32, 2, 3, 1,
    {"build": 1, "vllm_teacher": 1, "hf_teacher": 1, "hf_student": 1, "lora_student": 1},
)  # fmt: skip


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpu_check.sh",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Measure generation (hf, vLLM) and LoRA bf16 training speed of real-size student and "
        "teacher shapes (random weights, built here, no network) and write the figures as JSON.",
    )
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"), help="JSON file for the figures.")
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "scalingdown-gpu-check",
        help="Where the random-weight models are saved (about 4 GB on a GPU run; reused by later runs).",
    )
    parser.add_argument("--budget-seconds", type=float, default=300, help="Time budget for the whole check.")
    parser.add_argument(
        "--peak-tflops", type=float, help="Peak dense bf16 TFLOP/s for MFU; None: the data-sheet table's."
    )
    parser.add_argument("--skip-vllm", action="store_true", help="Do not measure the vLLM backend.")
    parser.add_argument("--vllm-eager", action="store_true", help="vLLM without CUDA graphs (starts faster).")
    parser.add_argument(
        "--cpu-smoke", action="store_true", help="Tiny models on the CPU: checks the script, not the GPU."
    )
    return parser


def _write(path: Path, record: dict) -> None:
    from scalingdown.artifacts import atomic_open

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path) as f:
        json.dump(record, f, indent=2)
        f.write("\n")


def _say(started: float, message: str) -> None:
    print(f"[{time.perf_counter() - started:5.0f} s] {message}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    import torch

    from scalingdown.errors import exception_line
    from scalingdown.gpucheck import measure
    from scalingdown.gpucheck.shapes import SHAPES, build_random_model, count_parameters

    if not args.cpu_smoke and not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU is visible; --cpu-smoke checks the script on the CPU", file=sys.stderr)
        return 2
    plan = SMOKE_PLAN if args.cpu_smoke else GPU_PLAN
    device = torch.device("cpu" if args.cpu_smoke else "cuda")
    started = time.perf_counter()
    facts = measure.device_facts(device)
    peak = args.peak_tflops or facts.get("peak_bf16_tflops")
    record: dict = {
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "mode": "cpu-smoke" if args.cpu_smoke else "gpu",
        "budget_seconds": args.budget_seconds,
        "device": facts,
        "models": {
            role: {"shape": name, "parameters": count_parameters(SHAPES[name])}
            for role, name in (("student", plan.student), ("teacher", plan.teacher))
        },
        "sections": {},
        "complete": False,
    }
    dirs = {name: args.work_dir / name for name in {plan.student, plan.teacher}}
    dtype = getattr(torch, plan.dtype)

    def build() -> dict:
        for name, folder in dirs.items():
            build_random_model(SHAPES[name], folder, device=device, dtype=dtype)
        if device.type == "cuda":  # hand the build's cached memory back before vLLM sizes its KV cache
            torch.cuda.empty_cache()
        return {"dirs": {name: str(folder) for name, folder in dirs.items()}, "dtype": plan.dtype}

    def generation(name: str):
        return lambda: measure.hf_generation(
            dirs[name], device=device, prompts=plan.gen_prompts, prompt_tokens=plan.gen_prompt_tokens,
            new_tokens=plan.gen_new_tokens, batch_size=plan.gen_batch,
        )  # fmt: skip

    def vllm(left: float) -> dict:
        if args.skip_vllm:
            return {"skipped": "--skip-vllm"}
        # The sections after it keep their usual share of what is left.
        reserve = sum(plan.need_seconds[s] for s in ("hf_teacher", "hf_student", "lora_student"))
        return measure.vllm_generation(
            dirs[plan.teacher], prompts=plan.vllm_prompts, prompt_tokens=plan.gen_prompt_tokens,
            new_tokens=plan.vllm_new_tokens, eager=args.vllm_eager, timeout=max(left - reserve, 1.0),
        )  # fmt: skip

    def training() -> dict:
        return measure.lora_training(
            dirs[plan.student], device=device, seq_len=plan.train_seq_len, batch_size=plan.train_batch,
            steps=plan.train_steps, warmup=plan.train_warmup, peak=peak,
        )  # fmt: skip

    sections = {
        "build": lambda left: build(),
        "vllm_teacher": vllm,
        "hf_teacher": lambda left: generation(plan.teacher)(),
        "hf_student": lambda left: generation(plan.student)(),
        "lora_student": lambda left: training(),
    }
    failed = False
    _write(args.out, record)
    for name, section in sections.items():
        left = args.budget_seconds - (time.perf_counter() - started)
        if name != "build" and "error" in record["sections"]["build"]:
            result = {"skipped": "the models could not be built"}
        elif left < plan.need_seconds[name]:
            need = plan.need_seconds[name]
            result = {"skipped": f"time budget: {max(left, 0):.0f} s left, this usually takes {need} s"}
        else:
            _say(started, f"{name} ...")
            t0 = time.perf_counter()
            try:
                result = section(left)
            except Exception as exc:  # recorded, and the next section still runs
                result = {"error": exception_line(exc)}
            result["wall_seconds"] = round(time.perf_counter() - t0, 1)
        failed = failed or "error" in result
        record["sections"][name] = result
        _say(started, f"{name}: {_summary(result)}")
        _write(args.out, record)
    record["seconds"] = round(time.perf_counter() - started, 1)
    record["complete"] = True
    vllm_rate = record["sections"]["vllm_teacher"].get("tokens_per_second")
    hf_rate = record["sections"]["hf_teacher"].get("tokens_per_second")
    if vllm_rate and hf_rate:
        record["vllm_over_hf_teacher"] = round(vllm_rate / hf_rate, 2)
    _write(args.out, record)
    _say(started, f"figures written to {args.out}")
    return 1 if failed else 0


def _summary(result: dict) -> str:
    for key in ("error", "skipped"):
        if key in result:
            return f"{key}: {result[key]}"
    parts = [f"{result['tokens_per_second']:,.0f} tokens/s"] if "tokens_per_second" in result else ["done"]
    if result.get("mfu") is not None:
        parts.append(f"MFU {result['mfu']:.1%}")
    return ", ".join(parts)


def main() -> None:
    sys.exit(run(_parser().parse_args()))


if __name__ == "__main__":
    main()

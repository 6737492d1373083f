"""Data-parallel replicas of the `hf` teacher backend against one process using every core.

The Llama 64x2 of `hf_batched_vs_loop.py` (pretrained on synthetic worked solutions) writes greedy
completions of up to 64 tokens for 512 synthetic teacher prompts, two ways on the same CPU cores:
  1. baseline: one `HFBackend` in this process, batch 32, torch using every core;
  2. ours: `HFBackend` with `data_parallel_size` = the number of cores, i.e. that many worker
     processes (`teach.replicas.ReplicaPool`), each with its own copy of the model and an equal share
     of the cores, batch 32 each; requests go out in chunks to whichever replica is free.
On a GPU node the same option puts one replica on each GPU; on a CPU it shows what the pool costs
and gains where the model is too small to keep several cores busy from one process. Start-up (the
workers import torch and load the model) is timed apart, after a warm-up call. It prints both wall
times, the ratio, and how many texts are identical.

    python benchmarks/hf_replicas.py [--n 512] [--replicas 2] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from hf_batched_vs_loop import build_model  # noqa: E402  (the same model, built once into benchmarks/out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=512, help="prompts")
    parser.add_argument("--replicas", type=int, default=os.cpu_count() or 2, help="worker processes")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=64, help="most new tokens per completion")
    parser.add_argument("--pretrain-steps", type=int, default=300)
    args = parser.parse_args()

    import torch

    from scalingdown.data.synthetic import generate
    from scalingdown.evaluate.prompts import zero_shot
    from scalingdown.teach import Request, SamplingParams
    from scalingdown.teach.hf_backend import HFBackend

    torch.set_num_threads(os.cpu_count() or 1)
    model_dir = build_model(args.pretrain_steps)
    prompts = [zero_shot(p) for p in generate(args.n, seed=4, split="train")]
    requests = [Request(f"p{i}", prompt) for i, prompt in enumerate(prompts)]
    params = SamplingParams(temperature=0.0, max_tokens=args.max_tokens)
    options = {"model": str(model_dir), "device": "cpu", "dtype": "float32", "batch_size": args.batch_size}

    single = HFBackend(options)
    single.generate(requests[:2], params)  # warm-up; loads the model
    started = time.perf_counter()
    reference = single.generate(requests, params)
    single_s = time.perf_counter() - started
    single.close()

    pool = HFBackend({**options, "data_parallel_size": args.replicas})
    started = time.perf_counter()
    pool.generate(requests[: 2 * args.replicas], params)  # starts the workers, each loads the model
    startup_s = time.perf_counter() - started
    started = time.perf_counter()
    results = pool.generate(requests, params)
    pool_s = time.perf_counter() - started
    pool.close()

    failed = sum(not r.ok for r in results)
    same = sum(a.texts == b.texts for a, b in zip(results, reference, strict=True))
    tokens = sum(r.completion_tokens for r in reference)
    print(f"model: {model_dir}, {os.cpu_count()} CPU cores")
    print(f"prompts: {len(prompts)} synthetic teacher prompts, greedy, max {args.max_tokens} new tokens")
    print(
        f"  one process, {torch.get_num_threads()} threads:   {single_s:7.2f} s  "
        f"({tokens / single_s:7.0f} tokens/s)"
    )
    print(
        f"  {args.replicas} replicas, {max(1, (os.cpu_count() or 1) // args.replicas)} thread(s) each: "
        f"{pool_s:7.2f} s  ({tokens / pool_s:7.0f} tokens/s); start-up {startup_s:.1f} s apart"
    )
    print(f"  speed-up: {single_s / pool_s:.2f}x")
    print(f"identical texts: {same}/{len(prompts)}, failed: {failed}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

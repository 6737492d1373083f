"""The `openai` teacher backend against `scalingdown serve`: concurrent versus one at a time.

A tiny Llama (width 64, 2 layers; the same build as `hf_batched_vs_loop.py`, pretrained on synthetic
worked solutions) is served on 127.0.0.1 by `scalingdown.serve.start_server` (batches of up to 32)
in a child process of its own, as `scalingdown serve` runs beside a teach run. 128 synthetic
teacher prompts ("Question: ...\\nAnswer:"), greedy, up to 64 new tokens, go through `OpenAIBackend`
(api "completions") three ways:
  1. max_concurrency 1: one request at a time, so every server batch holds one request;
  2. max_concurrency 32: requests overlap and the server batches them;
  3. the server's own capacity, without HTTP: in the server's process, the same prompts through
     one `generate_texts` call with batch size 32, on a thread like the server's worker (what the
     worker would do if every request were queued at once).
It prints the wall times, the concurrent/sequential ratio, how close the concurrent client gets to
the in-process capacity (%), the server's mean batch size, and whether all texts agree.

    python benchmarks/openai_concurrency.py [--n 128] [--concurrency 32] [--max-tokens 64] [--threads 1]

The server process runs torch on `--threads` CPU threads (default 1: for a model this small, a
thread pool only adds synchronisation, and on a shared machine its barriers stall whenever another
process takes a core).

The model is built once into benchmarks/out/ (git-ignored) and reused.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hf_batched_vs_loop import build_model  # noqa: E402 - the same model build as that benchmark


def through_backend(url: str, model: str, prompts: list[str], concurrency: int, max_tokens: int):
    """(seconds, results) for all prompts sent by the `openai` backend with `concurrency` in flight."""
    from scalingdown.teach.backend import Request, SamplingParams
    from scalingdown.teach.openai_backend import OpenAIBackend, OpenAIOptions

    backend = OpenAIBackend(
        OpenAIOptions(
            model=model,
            base_urls=[url],
            api="completions",
            max_concurrency=concurrency,
            request_timeout_s=600,
            max_retries=0,
        )
    )
    requests = [Request(f"p{i}", prompt) for i, prompt in enumerate(prompts)]
    started = time.perf_counter()
    results = backend.generate(requests, SamplingParams(temperature=0.0, max_tokens=max_tokens))
    return time.perf_counter() - started, results


def in_worker_thread(work):
    """Run `work()` on a fresh thread, as the server's worker runs generation; return its result."""
    out: list = []
    thread = threading.Thread(target=lambda: out.append(work()))
    thread.start()
    thread.join()
    return out[0]


def server_process(args: argparse.Namespace) -> int:
    """The child: measure the capacity, then serve; answers "stats" on stdin until EOF.

    Each step prints one JSON line on stdout: {"capacity_s", "tokens", "texts"}, then {"port"},
    then a `BatchStats` per "stats" line read.
    """
    from dataclasses import asdict

    from scalingdown.evaluate.generation import DecodingSettings, generate_texts
    from scalingdown.models.loading import load_model
    from scalingdown.serve import start_server

    prompts = synthetic_prompts(args.n)
    loaded = load_model(args.serve, device=args.device, dtype="float32")
    settings = DecodingSettings(max_new_tokens=args.max_tokens, batch_size=args.concurrency)
    in_worker_thread(lambda: generate_texts(loaded, prompts[: args.concurrency], settings, progress=False))
    started = time.perf_counter()
    direct = in_worker_thread(lambda: generate_texts(loaded, prompts, settings, progress=False))
    capacity_s = time.perf_counter() - started
    tokens = sum(sum(g.new_tokens) for g in direct)
    emit({"capacity_s": capacity_s, "tokens": tokens, "texts": [g.texts[0] for g in direct]})
    with start_server(
        args.serve,
        port=0,
        device=args.device,
        dtype="float32",
        max_batch_size=args.concurrency,
        batch_wait_ms=args.batch_wait_ms,
    ) as server:
        emit({"port": server.port, "model": server.model_name})
        for line in sys.stdin:
            if line.strip() == "stats":
                emit(asdict(server.stats()))
    return 0


def emit(record: dict) -> None:
    print(json.dumps(record), flush=True)


def synthetic_prompts(n: int) -> list[str]:
    from scalingdown.data.synthetic import generate
    from scalingdown.evaluate.prompts import zero_shot

    return [zero_shot(p) for p in generate(n, seed=2, split="test")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=128, help="prompts")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight (and batch size)")
    parser.add_argument("--max-tokens", type=int, default=64, help="most new tokens per completion")
    parser.add_argument("--batch-wait-ms", type=float, default=5.0, help="the server's --batch-wait-ms")
    parser.add_argument("--pretrain-steps", type=int, default=300)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads of the server process")
    parser.add_argument("--serve", help=argparse.SUPPRESS)  # internal: run as the server child
    args = parser.parse_args()
    if args.serve:
        return server_process(args)

    model_dir = build_model(args.pretrain_steps)
    prompts = synthetic_prompts(args.n)
    # The server runs in its own process, as `scalingdown serve` does, so the client's event loop
    # and the server's threads do not share one interpreter lock.
    threads = str(args.threads)
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    command = [sys.executable, __file__, "--serve", str(model_dir), "--n", str(args.n)]
    command += ["--concurrency", str(args.concurrency), "--max-tokens", str(args.max_tokens)]
    command += ["--device", args.device, "--batch-wait-ms", str(args.batch_wait_ms)]
    child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    try:
        capacity = json.loads(child.stdout.readline())
        served = json.loads(child.stdout.readline())
        url = f"http://127.0.0.1:{served['port']}/v1"

        def stats() -> dict:
            child.stdin.write("stats\n")
            child.stdin.flush()
            return json.loads(child.stdout.readline())

        through_backend(url, served["model"], prompts[:4], 4, args.max_tokens)  # warm-up
        runs = {}
        for concurrency in (1, args.concurrency):
            before = stats()
            seconds, results = through_backend(url, served["model"], prompts, concurrency, args.max_tokens)
            runs[concurrency] = (seconds, results, stats()["batches_run"] - before["batches_run"])
    finally:
        child.stdin.close()
        child.wait(timeout=60)

    capacity_s, tokens, direct_texts = capacity["capacity_s"], capacity["tokens"], capacity["texts"]
    print(f"model: {model_dir.name}, {args.device}, server process with {args.threads} torch thread(s)")
    print(f"prompts: {len(prompts)} synthetic teacher prompts, greedy, max {args.max_tokens} new tokens")
    for concurrency, (seconds, results, batches) in runs.items():
        failed = [r for r in results if not r.ok]
        same = sum(r.ok and r.texts[0] == d for r, d in zip(results, direct_texts, strict=True))
        print(
            f"  openai backend, concurrency {concurrency:3d}: {seconds:7.2f} s  "
            f"({tokens / seconds:6.0f} tokens/s; {batches} server batches, "
            f"mean {len(prompts) / max(batches, 1):.1f} requests each; "
            f"{len(failed)} failed; texts equal to in-process: {same}/{len(prompts)})"
        )
        for r in failed[:3]:
            print(f"    failed {r.key}: {r.error}")
    print(
        f"  in-process generate_texts, batch {args.concurrency:3d}: {capacity_s:7.2f} s  "
        f"({tokens / capacity_s:6.0f} tokens/s)"
    )
    sequential_s, concurrent_s = runs[1][0], runs[args.concurrency][0]
    print(f"  concurrent / one-at-a-time speed-up: {sequential_s / concurrent_s:.1f}x")
    print(f"  concurrent client reaches {100 * capacity_s / concurrent_s:.0f}% of the server's capacity")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

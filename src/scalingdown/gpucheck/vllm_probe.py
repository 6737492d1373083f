"""Child process of the GPU check: generation tokens/s through the `vllm` teacher backend.

    python -m scalingdown.gpucheck.vllm_probe MODEL_DIR [--prompts N] [--prompt-tokens T]
        [--new-tokens K] [--eager]

Prints one line, `RESULT_MARKER` then JSON: the figures, {"skipped": why} when vLLM is not installed,
or {"error": why}. (vLLM writes its own log lines to stdout as well.)
The engine's start (weights, memory profiling, CUDA graphs) is timed on its own with a one-request
warm-up, so tokens/s is the steady batch throughput a long teach run sees. Greedy decoding: a
random-weight model almost never picks the end-of-sequence id, so nearly every request generates
its full K tokens.
"""

from __future__ import annotations

import argparse
import json
import time

from scalingdown.errors import UserError, exception_line
from scalingdown.gpucheck.shapes import random_prompts

RESULT_MARKER = "gpu-check-result: "


def probe(model_dir: str, *, prompts: int, prompt_tokens: int, new_tokens: int, eager: bool) -> dict:
    from scalingdown.teach.backend import Request, SamplingParams
    from scalingdown.teach.vllm_backend import VLLMBackend, import_vllm

    try:
        import_vllm()
    except UserError as exc:
        return {"skipped": str(exc)}
    from transformers import AutoConfig

    vocab = AutoConfig.from_pretrained(model_dir).vocab_size
    backend = VLLMBackend(
        {
            "model": model_dir,
            "dtype": "bfloat16",
            "gpu_memory_utilization": 0.5,
            "max_model_len": prompt_tokens + new_tokens + 16,
            "enforce_eager": eager,
        }
    )
    texts = random_prompts(prompts + 1, prompt_tokens, vocab, seed=2)
    try:
        started = time.perf_counter()
        warm = backend.generate([Request("warm-up", texts[0])], SamplingParams(max_tokens=4))
        if not warm[0].ok:
            return {"error": warm[0].error}
        startup = time.perf_counter() - started
        requests = [Request(str(i), text) for i, text in enumerate(texts[1:])]
        started = time.perf_counter()
        results = backend.generate(requests, SamplingParams(max_tokens=new_tokens))
        seconds = time.perf_counter() - started
    finally:
        backend.close()
    failed = [r for r in results if not r.ok]
    generated = sum(r.completion_tokens for r in results)
    return {
        "prompts": prompts,
        "prompt_tokens": prompt_tokens,
        "max_new_tokens": new_tokens,
        "enforce_eager": eager,
        "startup_seconds": round(startup, 1),
        "generated_tokens": generated,
        "failed_requests": len(failed),
        **({"first_error": failed[0].error} if failed else {}),
        "seconds": round(seconds, 6),  # tokens_per_second is computed from it: keep it precise
        "tokens_per_second": round(generated / seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir")
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--eager", action="store_true")
    args = parser.parse_args()
    try:
        figures = probe(
            args.model_dir,
            prompts=args.prompts,
            prompt_tokens=args.prompt_tokens,
            new_tokens=args.new_tokens,
            eager=args.eager,
        )
    except Exception as exc:  # the parent records the reason; a traceback would be lost in its capture
        figures = {"error": exception_line(exc)}
    print(RESULT_MARKER + json.dumps(figures), flush=True)


if __name__ == "__main__":
    main()

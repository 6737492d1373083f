"""The `hf` teacher backend (batched generation) against a plain per-prompt `generate` loop.

A tiny Llama (width 64, 2 layers), pretrained here on worked solutions of the synthetic task so that
its outputs are text of the task's shape rather than noise, writes greedy completions of up to 64
tokens for 256 synthetic teacher prompts ("Question: ...\\nAnswer:"), two ways:
  1. `HFBackend.generate` (what `scalingdown teach` runs for an `hf` teacher), batch size 32;
  2. a loop that calls `model.generate` on one unpadded prompt at a time (the plain baseline).
Both use the same loaded weights on the CPU, after one warm-up call each. It prints both wall
times, their ratio (the target is >= 5x), and how many of the 256 texts are identical, showing
the first differences.

    python benchmarks/hf_batched_vs_loop.py [--n 256] [--batch-size 32] [--max-tokens 64]

The model is built once into benchmarks/out/ (git-ignored) and reused.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out"


def build_model(steps: int) -> Path:
    """Tiny Llama 64x2, pretrained `steps` steps on 2,000 synthetic worked solutions (built once)."""
    from scalingdown.config import TinyModelConfig
    from scalingdown.data.synthetic import generate
    from scalingdown.evaluate.prompts import worked_example
    from scalingdown.models.tiny import build_tiny

    texts = [worked_example(p) for p in generate(2000, seed=1, split="train")]
    config = TinyModelConfig(
        arch="llama",
        hidden_size=64,
        num_layers=2,
        num_heads=4,
        vocab_size=512,
        max_positions=256,
        pretrain_steps=steps,
    )
    return build_tiny(config, texts, OUT / f"synthetic-llama-64x2-{steps}", seed=0, progress=True)


def loop_generate(loaded, prompts: list[str], max_tokens: int) -> list[str]:
    """The baseline: one `model.generate` per prompt, greedy, no padding."""
    import torch

    tokenizer, model = loaded.tokenizer, loaded.model
    texts = []
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt").to(loaded.device)
        with torch.inference_mode():
            out = model.generate(
                **ids, max_new_tokens=max_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
            )
        texts.append(tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True))
    return texts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=256, help="prompts")
    parser.add_argument("--batch-size", type=int, default=32, help="the hf backend's batch size")
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
    prompts = [zero_shot(p) for p in generate(args.n, seed=2, split="train")]
    requests = [Request(f"p{i}", prompt) for i, prompt in enumerate(prompts)]
    params = SamplingParams(temperature=0.0, max_tokens=args.max_tokens)

    backend = HFBackend(
        {"model": str(model_dir), "device": "cpu", "dtype": "float32", "batch_size": args.batch_size}
    )
    backend.generate(requests[:2], params)  # warm-up; also loads the model
    loaded = backend._loaded
    loop_generate(loaded, prompts[:2], args.max_tokens)  # warm-up of the baseline

    started = time.perf_counter()
    results = backend.generate(requests, params)
    batched_s = time.perf_counter() - started
    started = time.perf_counter()
    reference = loop_generate(loaded, prompts, args.max_tokens)
    loop_s = time.perf_counter() - started

    batched = [r.texts[0] if r.ok else f"<error: {r.error}>" for r in results]
    same = sum(a == b for a, b in zip(batched, reference, strict=True))
    tokens = sum(r.completion_tokens for r in results)
    print(f"model: {model_dir} ({loaded.num_parameters:,} parameters), {torch.get_num_threads()} CPU threads")
    print(f"prompts: {len(prompts)} synthetic teacher prompts, greedy, max {args.max_tokens} new tokens")
    print(
        f"  hf backend (batch {args.batch_size:3d}): {batched_s:7.2f} s  ({tokens / batched_s:7.0f} tokens/s)"
    )
    print(f"  per-prompt generate loop: {loop_s:7.2f} s  ({tokens / loop_s:7.0f} tokens/s)")
    print(f"  speed-up: {loop_s / batched_s:.1f}x (target >= 5x)")
    print(f"identical texts: {same}/{len(prompts)}")
    shown = 0
    for i, (a, b) in enumerate(zip(batched, reference, strict=True)):
        if a != b and shown < 3:
            shown += 1
            common = len(os.path.commonprefix([a, b]))
            print(f"  differs at prompt {i}, character {common}:\n    batched: {a!r}\n    loop:    {b!r}")
    print(f"sample completion: {prompts[0]!r} -> {batched[0]!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

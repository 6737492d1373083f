"""Training tokens/s of `scalingdown train`'s loop (length-grouped batches) against naive padded batches.

GSM8K train problems become TinyLLM multitask examples (`train.examples.build_examples`): per problem
an answer example and one rationale example for each of two teachers, "gold" (the gold rationale and
its final answer line) and "gold2" (the same text lightly reworded, a second style). They are
tokenised by `train.batching.tokenize_examples` with max_length 512, so lengths vary a lot (an answer
example is the question and a short answer line, a rationale example the question and a whole
solution). A tiny Llama (width 128, 2 layers, tokenizer trained on GSM8K texts, pre-trained briefly
on GSM8K solutions so that fine-tuning starts from a model that already writes this kind of text)
is fully fine-tuned for exactly one epoch, every example seen once, three ways from the same
initial weights with the same learning rate, schedule, seed and number of optimizer steps:
  1. ours: `train.loop.train`, the loop `scalingdown train` runs, with group_by_length=True;
  2. baseline: the SAME loop with group_by_length=False (random padded batches) - the reported
     baseline, since it differs from ours in nothing but the batching;
  3. plain: a hand-written PyTorch loop over the same random padded batches (no Accelerate), which
     shows what the loop's machinery costs and that the baseline computes the same thing.
Tokens/s counts REAL (non-pad) tokens only, so padding waste shows as lost throughput.

Loss. The runs see the examples in a different order, so their per-step losses differ; and under
length grouping the last steps of the epoch hold the epoch's shortest examples (mostly answer
tasks), so "mean of the last 10 step losses" compares different examples. It is printed for reference,
but the fair comparison is each trained model's loss on the SAME examples after training: the
TinyLLM objective over all training examples (what the epoch minimises), and over 200 held-out
GSM8K test problems built the same way. Target: >= 1.5x real tokens/s, that loss within 5%.

    python benchmarks/train_throughput.py [--problems 400] [--batch-size 16] [--threads 2]

The model is built once into benchmarks/out/ (git-ignored) and reused.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out"
GSM8K = REPO.parent / "shared" / "data" / "gsm8k"
TEACHERS = ("gold", "gold2")
# Light rewording for the second teacher: the same steps in other words, as a second LLM would write.
REWORDING = (
    ("Then ", "Next, "),
    (" so ", " therefore "),
    ("So ", "Therefore, "),
    (" is ", " equals "),
    ("The answer is", "So the final answer is"),
)


def build_model(width: int, steps: int) -> Path:
    """A tiny Llama (2 layers) with a tokenizer trained on GSM8K train texts, pre-trained `steps` steps
    on GSM8K worked solutions (built once into benchmarks/out)."""
    from scalingdown.config import TinyModelConfig
    from scalingdown.data.gsm8k import load_gsm8k
    from scalingdown.evaluate.prompts import worked_example
    from scalingdown.models.tiny import build_tiny

    texts = [worked_example(p) for p in load_gsm8k("train", GSM8K)]
    config = TinyModelConfig(
        arch="llama",
        hidden_size=width,
        num_layers=2,
        num_heads=4,
        vocab_size=1024,
        max_positions=512,
        pretrain_steps=steps,
    )
    return build_tiny(config, texts, OUT / f"train-gsm8k-llama-{width}-{steps}", seed=0, progress=True)


def reworded(text: str) -> str:
    for old, new in REWORDING:
        text = text.replace(old, new)
    return text


def gold_rationales(problems) -> dict[str, list[dict]]:
    """Rationale rows of the two gold "teachers", as `train.examples.load_rationales` returns them."""
    from scalingdown.evaluate.prompts import worked_solution

    rows = {name: [] for name in TEACHERS}
    for p in problems:
        text = worked_solution(p)
        for name, style in zip(TEACHERS, (text, reworded(text)), strict=True):
            rows[name].append({"problem_id": p.id, "text": style, "verified": True})
    return rows


def featurize(problems, tokenizer, max_length: int) -> tuple[list[dict], list[float], list[str]]:
    """Tokenised multitask features, their fixed loss weights and the task names (as the stage makes them)."""
    from collections import Counter

    from scalingdown.train.batching import tokenize_examples
    from scalingdown.train.examples import build_examples
    from scalingdown.train.objective import example_weight, task_index, task_weights

    weights_by_task = task_weights("multitask", TEACHERS)
    index = task_index(weights_by_task)
    examples = build_examples(problems, gold_rationales(problems), fmt="multitask")
    features = tokenize_examples(
        examples, tokenizer, max_length=max_length, is_seq2seq=False, task_index=index
    )
    names = list(weights_by_task)
    counts = Counter(names[f["task"]] for f in features)
    weights = [example_weight(names[f["task"]], weights_by_task, counts, len(features)) for f in features]
    return features, weights, names


def run_loop(model_dir: Path, features, weights, names, hp, seed: int):
    """`train.loop.train` on a freshly loaded model; returns (TrainResult, wall seconds, trained model)."""
    from scalingdown.config import LoraSettings
    from scalingdown.train.loop import train
    from scalingdown.train.students import load_student

    student = load_student(str(model_dir), method="full", lora=LoraSettings())
    work = Path(tempfile.mkdtemp(prefix="train-throughput-", dir=OUT))  # fresh: nothing to resume
    try:
        started = time.perf_counter()
        result = train(
            student.model,
            features=features,
            weights=weights,
            num_tasks=len(names),
            task_names=names,
            pad_id=student.tokenizer.pad_token_id,
            is_seq2seq=False,
            hp=hp,
            work_dir=work,
            seed=seed,
            progress=False,
        )
        wall = time.perf_counter() - started
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return result, wall, student.model


def run_plain(model_dir: Path, features, weights, hp, seed: int, steps: int):
    """The hand-written baseline: random padded batches, AdamW, warmup + cosine, clipping, no Accelerate.
    Returns (per-step losses, wall seconds, trained model)."""
    import torch
    from transformers import get_cosine_schedule_with_warmup

    from scalingdown.config import LoraSettings
    from scalingdown.train.batching import collate, random_batches
    from scalingdown.train.objective import example_losses, multitask_loss
    from scalingdown.train.students import load_student

    student = load_student(str(model_dir), method="full", lora=LoraSettings())
    model, pad_id = student.model, student.tokenizer.pad_token_id
    weight_tensor = torch.tensor(weights, dtype=torch.float32)
    started = time.perf_counter()
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=hp.learning_rate, weight_decay=hp.weight_decay)
    scheduler = get_cosine_schedule_with_warmup(optimizer, int(hp.warmup_ratio * steps), steps)
    batches = random_batches(len(features), hp.batch_size, seed=seed, epoch=0)[:steps]
    losses = []
    model.train()
    for index in batches:
        batch = collate([features[i] for i in index], pad_id=pad_id, is_seq2seq=False)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        loss = multitask_loss(example_losses(logits, batch["labels"], shift=True), weight_tensor[index])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), hp.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses, time.perf_counter() - started, model


def dataset_loss(model, features, weights, pad_id: int, batch_size: int = 32) -> float:
    """The TinyLLM objective over all `features`: mean of weight_i * loss_i (see train/objective.py)."""
    import torch

    from scalingdown.train.batching import collate, length_grouped_batches
    from scalingdown.train.objective import example_losses

    model.eval()
    total = 0.0
    with torch.inference_mode():
        for index in length_grouped_batches([f["length"] for f in features], batch_size, seed=0, epoch=0):
            batch = collate([features[i] for i in index], pad_id=pad_id, is_seq2seq=False)
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            per_example = example_losses(logits, batch["labels"], shift=True)
            total += float((per_example * torch.tensor([weights[i] for i in index])).sum())
    return total / len(features)


def last_mean(losses: list[float], n: int = 10) -> float:
    return statistics.fmean(losses[-n:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=400, help="GSM8K train problems (3 examples each)")
    parser.add_argument("--held-out", type=int, default=200, help="GSM8K test problems for the held-out loss")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--pretrain-steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each kind, interleaved")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch
    from transformers import AutoTokenizer

    from scalingdown.config import Hyperparameters
    from scalingdown.data.gsm8k import load_gsm8k
    from scalingdown.train.batching import length_grouped_batches, padding_share, random_batches

    torch.set_num_threads(args.threads)
    model_dir = build_model(args.width, args.pretrain_steps)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    train_problems = load_gsm8k("train", GSM8K)[: args.problems]
    test_problems = load_gsm8k("test", GSM8K)[: args.held_out]
    features, weights, names = featurize(train_problems, tokenizer, args.max_length)
    held_features, held_weights, _ = featurize(test_problems, tokenizer, args.max_length)

    lengths = [f["length"] for f in features]
    steps = len(features) // args.batch_size  # one epoch: each example seen once by every run
    common = dict(
        epochs=1.0,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        warmup_ratio=0.05,
        schedule="cosine",
        max_length=args.max_length,
        mixed_precision="no",
        checkpoint_every=10 * steps,  # only the final checkpoint, which `scalingdown train` always writes
        log_every=10,
    )
    hps = {
        "ours": Hyperparameters(**common, group_by_length=True),
        "baseline": Hyperparameters(**common, group_by_length=False),
    }
    grouped = length_grouped_batches(lengths, args.batch_size, seed=args.seed, epoch=0)
    shuffled = random_batches(len(features), args.batch_size, seed=args.seed, epoch=0)
    if len(features) % args.batch_size or any(len(b) != args.batch_size for b in grouped):
        print(f"note: {len(features)} examples do not split into full batches of {args.batch_size}")

    def run(kind: str):
        """(per-step losses, wall seconds, trained model, real tokens the loop itself counted)."""
        if kind == "plain":
            plain = run_plain(model_dir, features, weights, hps["baseline"], args.seed, steps)
            return (*plain, None)
        result, seconds, model = run_loop(model_dir, features, weights, names, hps[kind], args.seed)
        assert result.steps == steps
        return result.losses, seconds, model, round(result.tokens_per_second * result.seconds)

    # Warm-up (thread pools, allocator, lazy imports), so the first timed run pays no one-time costs.
    warm = Hyperparameters(**common, max_steps=3, group_by_length=False)
    run_loop(model_dir, features, weights, names, warm, args.seed)

    kinds = ["ours", "baseline", "plain"]
    times: dict[str, list[float]] = {k: [] for k in kinds}
    first: dict[str, tuple] = {}
    load_before = os.getloadavg()[0]
    for repeat in range(args.repeats):
        # Rotate the order so that no kind always runs first (or right after another) on a busy box.
        for kind in kinds[repeat % 3 :] + kinds[: repeat % 3]:
            losses, seconds, model, counted = run(kind)
            times[kind].append(seconds)
            if kind not in first:
                first[kind] = (losses, model, counted)
            elif losses != first[kind][0]:
                print(f"note: {kind} repeat {repeat} has other losses than its first run")
            print(f"  [{repeat}] {kind:8s} {seconds:6.2f} s", flush=True)
    load_after = os.getloadavg()[0]

    real = sum(lengths)  # one epoch covers every example once, in all three runs
    pad_id = tokenizer.pad_token_id
    parameters = sum(p.numel() for p in first["ours"][1].parameters())
    print(f"model: {model_dir.name} ({parameters:,} parameters, full fine-tuning), {args.threads} threads")
    print(
        f"data: {len(train_problems)} GSM8K train problems -> {len(features)} examples "
        f"({', '.join(names)}), lengths {min(lengths)}-{max(lengths)} tokens (median "
        f"{statistics.median(lengths):.0f}), {sum(f['truncated'] for f in features)} cut at {args.max_length}"
    )
    print(
        f"one epoch = {steps} optimizer steps of {args.batch_size}, lr {args.learning_rate:g} cosine, "
        f"{real:,} real tokens; the loop counted {first['ours'][2]:,} (ours) and "
        f"{first['baseline'][2]:,} (baseline)"
    )
    print(f"load average (1 min) before / after the timed runs: {load_before:.2f} / {load_after:.2f}")
    labels = {
        "ours": "ours (loop, group_by_length)",
        "baseline": "baseline (loop, random)",
        "plain": "plain PyTorch loop, random",
    }
    padding = {"ours": padding_share(grouped, lengths)}
    padding["baseline"] = padding["plain"] = padding_share(shuffled, lengths)
    print(
        f"{'run (median of ' + str(args.repeats) + ')':30s} {'wall s':>7s} {'real tok/s':>10s} "
        f"{'padding':>8s} {'last-10 loss':>12s} {'train-set loss':>14s} {'held-out loss':>13s}"
    )
    wall, loss = {}, {}
    for kind in kinds:
        losses, model, _ = first[kind]
        wall[kind] = statistics.median(times[kind])
        loss[kind] = (
            last_mean(losses),
            dataset_loss(model, features, weights, pad_id),
            dataset_loss(model, held_features, held_weights, pad_id),
        )
        print(
            f"{labels[kind]:30s} {wall[kind]:7.2f} {real / wall[kind]:10,.0f} {padding[kind]:8.1%} "
            f"{loss[kind][0]:12.4f} {loss[kind][1]:14.4f} {loss[kind][2]:13.4f}"
        )
        print(f"{'':30s} all runs: {', '.join(f'{t:.2f}' for t in times[kind])} s")

    def pct(a: float, b: float) -> str:
        return f"{100 * (a - b) / b:+.1f}%"

    speedup = wall["baseline"] / wall["ours"]
    print(f"speed-up in real tokens/s, ours vs baseline: {speedup:.2f}x (target >= 1.5x)")
    print(f"speed-up, ours vs the plain PyTorch loop: {wall['plain'] / wall['ours']:.2f}x")
    o, b = loss["ours"], loss["baseline"]
    print(
        f"loss, ours vs baseline: last-10-steps {pct(o[0], b[0])} (not comparable, see docstring), "
        f"train-set {pct(o[1], b[1])}, held-out {pct(o[2], b[2])} (target within 5%)"
    )
    drift = max(abs(x - y) for x, y in zip(first["baseline"][0], first["plain"][0], strict=True))
    print(f"baseline vs plain loop, largest per-step loss difference: {drift:.2e}")
    return 0 if speedup >= 1.5 and abs(o[1] - b[1]) <= 0.05 * b[1] and abs(o[2] - b[2]) <= 0.05 * b[2] else 1


if __name__ == "__main__":
    raise SystemExit(main())

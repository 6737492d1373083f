"""Does the demo's documented finding reproduce? Run the study twice from scratch, on two thread counts,
and compare the verdicts (not the decimals).

    python benchmarks/demo_reproducibility.py                      # runs/repro-t2 and runs/repro-t1
    python benchmarks/demo_reproducibility.py --compare A B        # two finished run directories

A verdict is what the report claims: per reference and scale, the smallest winner and every ladder
decision (won / not / not tested); per ablation pair and per strategy comparison, whether the
difference is significant and its sign; whether the crossover size is bracketed. Each run's time
per stage is printed from its manifest. Exit 0 when the verdicts agree, 1 when they differ.
Different thread counts change the order of floating-point sums in training, so the two runs are
two honest replications of one machine's study, not copies of one another.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_demo(config: Path, run_dir: Path, threads: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "scalingdown.cli", "run", str(config), "--run-dir", str(run_dir)],
        env=env,
        cwd=REPO,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"the run in {run_dir} failed (exit {done.returncode})")
    return seconds


def verdicts(run_dir: Path, alpha: float | None = None) -> dict:
    findings = json.loads((run_dir / "report" / "findings.json").read_text())
    alpha = alpha if alpha is not None else findings["settings"]["alpha"]
    out: dict = {}
    for f in findings["findings"]:
        key = f"finding {f['reference']} ({f['scale']})"
        out[key] = {"winner": f["winner"], "decisions": f["decisions"]}
        crossover = f.get("crossover") or {}
        if crossover:
            out[key]["crossover"] = crossover.get("status")
    for pair in findings.get("ablation", []):
        c = pair["comparison"]
        out[f"ablation {pair['multi']} vs {pair['single']}"] = _direction(c, alpha)
    for s in findings.get("strategies", []):
        c = s["comparison"]
        out[f"strategy {s['student']} vs {s['baseline']}"] = (
            "no difference" if not s.get("different") else ("better" if c["diff"] > 0 else "worse")
        )
    return out


def _direction(comparison: dict, alpha: float) -> str:
    if comparison["p"] > alpha:
        return "no difference"
    return "better" if comparison["diff"] > 0 else "worse"


def stage_seconds(run_dir: Path) -> dict:
    manifest = json.loads((run_dir / "manifest.json").read_text())
    stages = manifest.get("stages", {})
    return {name: entry.get("seconds") for name, entry in stages.items() if isinstance(entry, dict)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "demo.yaml")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("RUN_A", "RUN_B"))
    parser.add_argument("--threads", nargs=2, type=int, default=[2, 1], metavar=("A", "B"))
    args = parser.parse_args()
    if args.compare:
        runs = list(args.compare)
    else:
        runs = [REPO / "runs" / f"repro-t{t}" for t in args.threads]
        for run_dir, threads in zip(runs, args.threads, strict=True):
            seconds = run_demo(args.config, run_dir, threads)
            print(f"{run_dir.name}: {threads} thread(s), {seconds / 60:.1f} min", flush=True)
    found = [verdicts(r) for r in runs]
    for run_dir in runs:
        stages = stage_seconds(run_dir)
        total = sum(v for v in stages.values() if isinstance(v, (int, float)))
        print(f"{run_dir}: stages {total / 60:.1f} min in all")
    keys = list(dict.fromkeys([*found[0], *found[1]]))
    differ = 0
    print(f"| verdict | {runs[0].name} | {runs[1].name} | same |")
    print("|---|---|---|---|")
    for key in keys:
        a, b = found[0].get(key), found[1].get(key)
        same = a == b
        differ += not same
        print(f"| {key} | {json.dumps(a)} | {json.dumps(b)} | {'yes' if same else 'NO'} |")
    print(f"{len(keys) - differ} of {len(keys)} verdicts agree")
    return 0 if differ == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())

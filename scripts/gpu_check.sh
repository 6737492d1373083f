#!/usr/bin/env bash
# GPU check: generation (hf and vLLM) and LoRA bf16 training speed of a Qwen2.5-0.5B-shaped student and a
# Qwen2.5-1.5B-shaped teacher with random weights built on this machine; no network. Writes JSON figures.
#   scripts/gpu_check.sh [--out gpu_check.json] [--budget-seconds 300] [--peak-tflops N] [--skip-vllm]
#                        [--vllm-eager] [--work-dir DIR] [--cpu-smoke]
# --cpu-smoke runs the same code with a tiny model on the CPU (what the tests run). --help lists all.
set -euo pipefail

PYTHON="${PYTHON:-python}"
BUDGET=300
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    case "${args[$i]}" in
        --budget-seconds) BUDGET="${args[$((i + 1))]:-300}" ;;
        --budget-seconds=*) BUDGET="${args[$i]#*=}" ;;
    esac
done

# The check keeps to its budget itself; this backstop (budget + 60 s) stops it if something hangs.
# The figures measured until then are already in the JSON file.
exec timeout --kill-after=10 "$(( ${BUDGET%.*} + 60 ))" "$PYTHON" -m scalingdown.gpucheck "$@"

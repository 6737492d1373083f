"""The GPU check: how fast this machine runs the study's real-size models, in a few minutes, offline.

`scripts/gpu_check.sh` (or `python -m scalingdown.gpucheck`) builds models with the shapes of real
students and teachers (Qwen2.5-0.5B and Qwen2.5-1.5B) and random weights on the machine itself, so no
download and no network is needed, then measures what a study spends its GPU time on:

- generation tokens/s through the `hf` path (`scalingdown eval` and the `hf` teacher backend) and
  through the `vllm` teacher backend (in a child process, so its engine's memory is freed after);
- LoRA training tokens/s with bf16 mixed precision, exactly as `scalingdown train` runs a step, and the
  model FLOPs utilisation (MFU) against the GPU's peak bf16 throughput.

Figures go to one JSON file, rewritten after every section so a crash keeps what was measured; a time
budget (5 minutes by default) skips what no longer fits. `--cpu-smoke` runs the same code on a tiny
model on the CPU, which is how the tests check the script. Modules: `shapes` (model shapes, the
random-weight build, a tokenizer covering every id), `flops` (FLOPs per token, peak table, MFU),
`measure` (the measurements), `vllm_probe` (the vLLM child process), `__main__` (the command line).
"""

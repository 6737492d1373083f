"""The train stage: distil teachers' rationales into small students (`scalingdown train`).

- `objective`: the TinyLLM multi-teacher loss (answer task + one rationale task per teacher, fixed
  per-example weights that keep it linear) and the white-box KL / JSD term;
- `examples`: (prompt, target) pairs from the problems and `teachers/<name>/rationales.jsonl`, and the
  prompt record that lets evaluation ask a student the way it was trained;
- `batching`: tokenisation with prompt masking, length-grouped batches, collation.
"""

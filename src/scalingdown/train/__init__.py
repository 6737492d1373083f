"""The train stage: distil teachers' rationales into small students (`scalingdown train`).

- `objective`: the TinyLLM multi-teacher loss (answer task + one rationale task per teacher, fixed
  per-example weights that keep it linear) and the white-box KL / JSD term;
- `examples`: (prompt, target) pairs from the problems and `teachers/<name>/rationales.jsonl`, and the
  prompt record that lets evaluation ask a student the way it was trained;
- `batching`: tokenisation with prompt masking, length-grouped batches, collation;
- `chunked_loss`: the per-example losses the loop trains on, a cross-entropy over target positions
  only, a chunk of positions at a time, so no (tokens x vocab) logits tensor is ever held;
- `students` (PEFT wiring, gradient checkpointing), `white_box` (the KL term's teacher inputs),
  `loop` (the training loop), `output` (saving a student), `stage` (`scalingdown train`).
"""

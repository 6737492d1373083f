"""Saving a trained student: `students/<name>/`, complete or not at all.

The directory holds what evaluation and people need:

    adapter_config.json + adapter_model.safetensors   (lora, qlora: PEFT's save_pretrained)
    config.json + model.safetensors                   (full)
    tokenizer files
    scalingdown.json                                  (metadata: prompt format, teachers, losses, ...)
    README.md                                         (model card)
    merged/                                           (optional: LoRA merged into full weights)

`scalingdown.models.loading.load_model` reads the adapter form (base + adapter, merged) as well as
the full form, and `scalingdown eval --prompt student` finds the prompt format in scalingdown.json.
Everything is written into a temporary directory beside the target and renamed into place when
complete, so a crash leaves either the previous student or the new one, never a mix.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

from scalingdown.artifacts import atomic_directory, write_json
from scalingdown.layout import STUDENT_FILE
from scalingdown.models.loading import DTYPES, HUB_ID, load_model
from scalingdown.train.students import Student

MERGED_DIR = "merged"
CARD_FILE = "README.md"
# Metadata shown in the card's own sections; the rest goes to the training summary.
_CARD_SECTIONS = {
    "prompt_template",
    "config",
    "lora",
    "hyperparameters",
    "versions",
    "losses",
    "stop",
    "modes",
}


def save_student(
    student: Student,
    out_dir: str | Path,
    *,
    metadata: dict,
    merge: bool = False,
    state_dict: dict | None = None,
) -> Path:
    """Write `student` to `out_dir` atomically; returns `out_dir`.

    `scalingdown.json` is `metadata` plus the student's `method`, `base_model`,
    `trainable_parameters` and `total_parameters` (these four come from the student and win over
    equal keys in `metadata`). With `merge` and a lora/qlora student, `out_dir/merged/` also holds
    the adapter merged into full weights (rebuilt from the saved adapter on the CPU, so the
    in-memory student is left as it is), the tokenizer and a copy of scalingdown.json. `state_dict`,
    when given, is what is saved instead of the model's own tensors: the weights gathered after FSDP or
    DeepSpeed training, where the model object holds only this process's shard.
    """
    out_dir = Path(out_dir)
    with atomic_directory(out_dir) as tmp:
        meta = {
            **metadata,
            "method": student.method,
            "base_model": student.base_model,
            "trainable_parameters": student.trainable_parameters,
            "total_parameters": student.total_parameters,
        }
        # PEFT writes adapter_config.json + adapter_model.safetensors; transformers config.json +
        # model.safetensors. Both default to safetensors; saying so guards against a changed default.
        gathered = {} if state_dict is None else {"state_dict": state_dict}
        with warnings.catch_warnings():
            # PEFT looks for the base's config.json to see whether the vocabulary grew; a GGUF base (a
            # .gguf file or pkg: name) has none there, and a student's vocabulary is never resized.
            warnings.filterwarnings("ignore", message="Could not find a config file in")
            student.model.save_pretrained(tmp, safe_serialization=True, **gathered)
        student.tokenizer.save_pretrained(tmp)
        write_json(tmp / STUDENT_FILE, meta)
        (tmp / CARD_FILE).write_text(model_card(meta), encoding="utf-8")
        if merge and student.method in ("lora", "qlora"):
            _save_merged(student, tmp, tmp / MERGED_DIR)
    return out_dir


def _save_merged(student: Student, adapter_dir: Path, merged_dir: Path) -> None:
    """The base with the saved adapter merged in (`merge_and_unload`), as plain full weights.

    Built from the files just written, on the CPU: the training model stays untouched and on its
    device, and a QLoRA adapter is merged into an unquantised base (merging into 4-bit weights
    would round the update away). The dtype is the base's own (bfloat16 for a 4-bit base).
    """
    dtype = _base_dtype(student)
    name = next((key for key, value in DTYPES.items() if value == dtype), "float32")
    merged = load_model(str(adapter_dir), device="cpu", dtype=name).model
    merged.save_pretrained(merged_dir, safe_serialization=True)
    student.tokenizer.save_pretrained(merged_dir)
    shutil.copyfile(adapter_dir / STUDENT_FILE, merged_dir / STUDENT_FILE)


def _base_dtype(student: Student):
    import torch

    if student.method == "qlora":
        return torch.bfloat16
    return student.model.get_input_embeddings().weight.dtype


def _cell(value, limit: int = 120) -> str:
    """One Markdown table cell: JSON for non-strings, one line, no bare pipes, cut at `limit`."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    text = " ".join(text.split())
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return text.replace("|", "\\|")


def _count(value) -> str:
    return f"{value:,}" if isinstance(value, int) else "?"


def model_card(meta: dict) -> str:
    """A model card (`README.md`) from the student's metadata: what it is, how it was made, how to
    evaluate it. Hugging Face reads the YAML header; the base is named there only when it is a Hub id."""
    base = str(meta.get("base_model", "unknown"))
    method = meta.get("method", "unknown")
    teachers = meta.get("teachers") or []
    adapter = method in ("lora", "qlora")
    header = ["---", f"library_name: {'peft' if adapter else 'transformers'}"]
    if HUB_ID.match(base):
        header.append(f"base_model: {base}")
    header += ["tags:", "- scalingdown", "- distillation", "- math-reasoning", "---", ""]

    lines = [
        "# ScalingDown student",
        "",
        "A student language model distilled from teachers' rationales by `scalingdown train` "
        "(multi-teacher rationale distillation, after TinyLLM).",
        "",
        f"- Base model: `{base}`",
        f"- Method: {method}",
        f"- Teachers: {', '.join(f'`{t}`' for t in teachers) if teachers else 'none recorded'}",
        f"- Training format: {meta.get('format', 'unknown')}",
        f"- Data hash: `{meta.get('data_hash', 'unknown')}`",
        f"- Parameters: {_count(meta.get('total_parameters'))} total, "
        f"{_count(meta.get('trainable_parameters'))} trained",
        "",
        "## Evaluate it",
        "",
        "The student is prompted the way it was trained (the template is in `scalingdown.json`):",
        "",
        "```bash",
        "scalingdown eval --model DIR --prompt student",
        "```",
        "",
        "where `DIR` is this directory"
        + (" (or its `merged/` folder, if saved: full weights that load without PEFT)." if adapter else "."),
        "",
    ]
    modes = list(meta.get("modes") or {})
    if len(modes) > 1:
        lines += [f"Its modes (`--mode`): {', '.join(f'`{m}`' for m in modes)} and `vote` (all of them).", ""]
    if adapter:
        lines += [
            "In Python, `scalingdown.models.loading.load_model(DIR)` loads the base, applies this adapter "
            "and merges it.",
            "",
        ]
    summary = {k: v for k, v in meta.items() if k not in _CARD_SECTIONS}
    lines += ["## Training summary", "", "| key | value |", "| --- | --- |"]
    lines += [f"| {key} | {_cell(value)} |" for key, value in summary.items()]
    lines.append("")
    for key, title in (
        ("lora", "LoRA settings"),
        ("hyperparameters", "Hyperparameters"),
        ("versions", "Versions"),
    ):
        if isinstance(meta.get(key), dict) and meta[key]:
            lines += [f"## {title}", "", "```json", json.dumps(meta[key], indent=2, default=str), "```", ""]
    if meta.get("prompt_template"):
        lines += ["## Prompt template", "", "```text", str(meta["prompt_template"]), "```", ""]
    return "\n".join(header + lines)

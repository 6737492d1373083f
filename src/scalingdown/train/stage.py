"""The train stage: each student learns the answer and every teacher's rationale -> students/<name>/.

For each configured student: its rationales (teachers/<name>/rationales.jsonl, verified ones), the
examples its `combine` strategy makes of them (`train.combine`: TinyLLM's answer task + one rationale
task per teacher, the pooled single-sequence format, one routed teacher per question, or measured
alpha_i), tokenised with prompt tokens masked, the base model with LoRA / QLoRA / full fine-tuning,
the loop (`train.loop.train`), then the saved student: adapter or weights, tokenizer,
`scalingdown.json` (its inference modes with their prompt templates and stop strings, so
`scalingdown eval --prompt student` prompts it as it was trained; what the strategy decided), a
model card and `train_log.jsonl`. Checkpoints live in checkpoints/<name>/ so a crashed run
resumes. Runs the same under `accelerate launch` / `torchrun` (the main process saves).
"""

from __future__ import annotations

import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from scalingdown.artifacts import merge_json, read_json
from scalingdown.config import StudentConfig, StudyConfig, training_settings
from scalingdown.data.schema import Problem
from scalingdown.digests import digest, file_digest, tree_fingerprint
from scalingdown.errors import UserError
from scalingdown.layout import (
    STUDENT_FILE,
    checkpoint_dir,
    effective_seed,
    replicate_label,
    replicate_seeds,
    student_dir,
    tiny_base_dir,
)
from scalingdown.train.combine import CombineInputs, combine_teachers, get_strategy, read_teacher_quality
from scalingdown.train.examples import data_hash, load_rationales, student_prompt_record

# Hyperparameters that trade memory for compute and leave the trained weights as they are (the
# recomputed activations are the same numbers), so they are not part of a student's inputs key.
SAME_RESULT_SETTINGS = {"gradient_checkpointing"}


def process_state():
    """Accelerate's view of the processes. Without CUDA, several processes (torchrun, `accelerate launch`)
    are CPU data parallel over gloo, which Accelerate only does when told the run is on the CPU."""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def base_model_path(
    spec: StudentConfig, study: StudyConfig, texts: list[str], seed: int | None = None
) -> str:
    """The base model: the configured path, or a tiny model built (once) from the task's text and
    initialised with the replicate's seed."""
    if spec.path is not None:
        return spec.path
    from scalingdown.models.tiny import build_tiny

    out = tiny_base_dir(study.run_dir, spec.name, seed)
    with process_state().main_process_first():  # one process builds, the others then reuse it
        build_tiny(spec.tiny, texts, out, seed=effective_seed(study, seed), progress=False)
    return str(out)


def local_teacher_path(teacher, study: StudyConfig) -> str:
    """Where an `hf` teacher's model is: its `model`, or the tiny teacher the teach stage built."""
    return teacher.model or str(Path(study.run_dir) / "teachers" / ".models" / teacher.name)


def white_box_teachers(
    spec: StudentConfig,
    study: StudyConfig,
    tokenizer,
    task_index: dict[str, int],
    where: str,
    features: list[dict],
    examples: list,
    max_length: int,
):
    """Local `hf` teachers (tiny ones too) that share the student's tokenizer, for the KL term; each
    rationale feature of theirs gets the teacher's own prompt + the same target (`train.white_box`)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from scalingdown.models.gguf import materialise
    from scalingdown.models.gguf_files import is_gguf_source
    from scalingdown.teach.hf_backend import render_prompt
    from scalingdown.train.white_box import WhiteBox, add_teacher_inputs

    chosen, tasks = [], set()
    for teacher in study.teachers:
        task = task_index.get(f"rationale:{teacher.name}")
        if teacher.backend != "hf" or task is None:
            continue
        path = local_teacher_path(teacher, study)
        if is_gguf_source(path):  # a GGUF teacher: its converted directory (converted once, cached)
            path = str(materialise(path))
        try:
            teacher_tokenizer = AutoTokenizer.from_pretrained(path)
        except (OSError, ValueError) as exc:
            raise UserError(f"{where}.kl_weight: cannot load teacher {teacher.name!r} ({exc})") from None
        if teacher_tokenizer.get_vocab() != tokenizer.get_vocab():
            raise UserError(
                f"{where}.kl_weight: teacher {teacher.name!r} does not share the student's tokenizer"
            )
        chosen.append(WhiteBox(task=task, model=AutoModelForCausalLM.from_pretrained(path)))
        tasks.add(task)
        prompts = [
            render_prompt(teacher_tokenizer, e.source_prompt)
            if f["task"] == task and e.source_prompt is not None
            else None
            for f, e in zip(features, examples, strict=True)
        ]
        add_teacher_inputs(features, prompts, teacher_tokenizer, {task}, max_length=max_length)
    if not chosen:
        raise UserError(f"{where}.kl_weight: needs a local 'hf' teacher among this student's teachers")
    return chosen


@dataclass
class StudentInputs:
    """Everything a student is trained from, gathered before anything heavy loads."""

    lora: object  # LoraSettings
    hp: object  # Hyperparameters
    teachers: list[str]
    weights_by_task: dict[str, float]
    examples: list
    rationale_files: dict[str, str | None]  # teacher -> digest of the rationales.jsonl read
    frame: str = "multitask"  # the examples' format: 'multitask' or 'single' (`train.combine`)
    combine_record: dict = field(default_factory=dict)  # what the strategy decided, from which numbers
    trained_tasks: list[str] = field(default_factory=list)  # tasks with examples: the inference modes


def student_inputs(study: StudyConfig, index: int, problems: list[Problem]) -> StudentInputs:
    """Resolved settings, rationales and examples of student `index` (the same for every replicate;
    `inputs_key` says whether a saved replicate was trained from exactly these)."""
    spec = study.students[index]
    where = f"students[{index}]"
    run_dir = Path(study.run_dir)
    lora, hp = training_settings(study, index)
    # The student learns from every rationale the teach stage kept: with policy 'keep' or 'flag' that
    # includes unverified ones, with 'drop' only verified ones are there.
    rationales = load_rationales(
        run_dir,
        spec.teachers,
        problems=problems,
        where=f"{where}.teachers",
        include_unverified=study.teach.policy in ("keep", "flag"),
    )
    teachers = sorted(rationales)
    strategy = get_strategy(spec.combine)
    quality = {}
    if strategy.ranks_teachers:
        quality = read_teacher_quality(run_dir, list(rationales), rank_by=spec.rank_by, where=where)
    combined = combine_teachers(
        spec.combine,
        CombineInputs(
            problems=problems,
            rationales=rationales,
            answer_weight=spec.answer_weight,
            rationale_weights=spec.rationale_weights,
            quality=quality,
            rank_by=spec.rank_by,
            where=where,
        ),
    )
    return StudentInputs(
        lora=lora,
        hp=hp,
        teachers=teachers,
        weights_by_task=combined.task_weights,
        examples=combined.examples,
        rationale_files={t: file_digest(teacher_rationales(run_dir, t)) for t in teachers},
        frame=strategy.frame,
        combine_record=combined.record,
        trained_tasks=combined.trained_tasks,
    )


def teacher_rationales(run_dir: Path, teacher: str) -> Path:
    return run_dir / "teachers" / teacher / "rationales.jsonl"


def inputs_key(study: StudyConfig, index: int, inputs: StudentInputs, seed: int | None = None) -> str:
    """What a trained student depends on: its spec, the resolved LoRA settings and hyperparameters
    (shipped defaults included), the seed, the examples it learns (train problems and kept
    rationales, in order), the rationale files they came from, and a local base model's weights.
    White-box teachers' weights count too when the KL term is on. Settings that change how much
    memory training takes but not what it computes (`SAME_RESULT_SETTINGS`) are left out: turning
    them on or off does not make a trained student stale."""
    spec = study.students[index]
    base = tree_fingerprint(spec.path) if spec.path is not None else None
    white_box = []
    if spec.kl_weight > 0:
        white_box = [
            [t.name, t.model, tree_fingerprint(local_teacher_path(t, study))]
            for t in study.teachers
            if t.name in inputs.teachers and t.backend == "hf"
        ]
    record = spec.model_dump(mode="json")
    record["hyperparameters"] = {
        k: v for k, v in record["hyperparameters"].items() if k not in SAME_RESULT_SETTINGS
    }
    return digest(
        [
            record,
            inputs.lora.model_dump(mode="json"),
            inputs.hp.model_dump(mode="json", exclude=SAME_RESULT_SETTINGS),
            effective_seed(study, seed),
            data_hash(inputs.examples),
            inputs.rationale_files,
            inputs.weights_by_task,  # 'weighted' sets them from the teachers' stats.json
            inputs.combine_record,
            base,
            white_box,
        ]
    )


def train_student(
    study: StudyConfig,
    index: int,
    problems: list[Problem],
    *,
    progress: bool = True,
    inputs: StudentInputs | None = None,
    seed: int | None = None,
) -> dict:
    """Train student `index` of the study (the replicate of `seed`; None: the single run with the
    study's seed) and save it; returns its summary."""
    from accelerate.utils import set_seed

    from scalingdown.evaluate.efficiency import package_versions
    from scalingdown.train.batching import tokenize_examples
    from scalingdown.train.loop import train
    from scalingdown.train.objective import example_weight
    from scalingdown.train.output import save_student
    from scalingdown.train.students import load_student

    spec = study.students[index]
    where = f"students[{index}]"
    run_dir = Path(study.run_dir)
    inputs = inputs or student_inputs(study, index, problems)
    key, run_seed = inputs_key(study, index, inputs, seed), effective_seed(study, seed)
    lora, hp, teachers = inputs.lora, inputs.hp, inputs.teachers
    weights_by_task, examples = inputs.weights_by_task, inputs.examples
    if not examples:
        raise UserError(
            f"{where}: no training examples (the teachers kept no rationale for any train problem)"
        )
    texts = [e.prompt + e.target for e in examples]
    base = base_model_path(spec, study, texts, seed)
    # The adapter's initial weights come from the global RNG: seeded here, a student is the same
    # whichever students were trained before it in this process (one `run` or one SLURM array job).
    set_seed(run_seed)
    student = load_student(
        base,
        method=spec.method,
        lora=lora,
        gradient_checkpointing=hp.gradient_checkpointing,
        where=where,
    )
    task_names = list(weights_by_task)
    task_index = {name: i for i, name in enumerate(task_names)}
    features = tokenize_examples(
        examples,
        student.tokenizer,
        max_length=hp.max_length,
        is_seq2seq=student.is_seq2seq,
        task_index=task_index,
    )
    counts = Counter(task_names[f["task"]] for f in features)
    weights = [
        example_weight(task_names[f["task"]], weights_by_task, counts, len(features)) for f in features
    ]
    white_box = []
    if spec.kl_weight > 0:
        white_box = white_box_teachers(
            spec, study, student.tokenizer, task_index, where, features, examples, hp.max_length
        )
    work = checkpoint_dir(run_dir, spec.name, seed)
    result = train(
        student.model,
        features=features,
        weights=weights,
        num_tasks=len(task_names),
        task_names=task_names,
        pad_id=student.tokenizer.pad_token_id,
        is_seq2seq=student.is_seq2seq,
        hp=hp,
        work_dir=work,
        seed=run_seed,
        white_box=white_box,
        kl_weight=spec.kl_weight,
        kl_kind=spec.kl_kind,
        progress=progress and process_state().is_main_process,  # one process reports
        label=replicate_label(spec.name, seed),
    )
    summary = {
        "student": spec.name,
        "seed": run_seed,
        "replicate": seed is not None,
        "base_model": spec.path or "tiny",
        "method": spec.method,
        "format": inputs.frame,
        "combine": inputs.combine_record,
        "teachers": teachers,
        "task_weights": weights_by_task,
        "examples": dict(counts),
        "steps": result.steps,
        "final_loss": result.final_loss,
        "tokens_per_second": result.tokens_per_second,
        "train_seconds": result.seconds,
        "resumed_from_step": result.resumed_from,
        "trainable_parameters": student.trainable_parameters,
        "total_parameters": student.total_parameters,
        "data_hash": data_hash(examples),
        "rationale_files": inputs.rationale_files,
        "inputs_digest": key,
    }
    state = process_state()
    if state.is_main_process:
        metadata = {
            **student_prompt_record(inputs.frame, inputs.trained_tasks),
            **summary,
            "losses": result.losses,
            "config": spec.model_dump(mode="json"),
            "lora": lora.model_dump(mode="json"),
            "hyperparameters": hp.model_dump(mode="json"),
            "versions": package_versions(("scalingdown", "torch", "transformers", "peft", "accelerate")),
        }
        out = save_student(
            student,
            student_dir(run_dir, spec.name, seed),
            metadata=metadata,
            merge=spec.merge,
            state_dict=result.state_dict,
        )
        log = work / "train_log.jsonl"
        if log.exists():
            shutil.copyfile(log, out / "train_log.jsonl")
    state.wait_for_everyone()
    return summary


def is_trained(study: StudyConfig, index: int, inputs: StudentInputs, seed: int | None = None) -> bool:
    """A saved replicate counts as trained only when it was trained from exactly these inputs."""
    meta = student_dir(study.run_dir, study.students[index].name, seed) / STUDENT_FILE
    if not meta.is_file():
        return False
    try:
        return read_json(meta).get("inputs_digest") == inputs_key(study, index, inputs, seed)
    except UserError:
        return False  # unreadable metadata: train again, which rewrites it


def run_train_stage(
    study: StudyConfig, *, only: list[str] | None = None, force: bool = False, progress: bool = True
) -> dict[str, dict]:
    """Train every student (or those named in `only`); one that fails is reported, the others go on."""
    from scalingdown.data.stage import load_run_problems

    if not study.students:
        raise UserError("no students configured (the 'students' list is empty)")
    known = [s.name for s in study.students]
    for name in only or []:
        if name not in known:
            raise UserError(f"--student {name!r}: not a student of this study ({', '.join(known)})")
    run_dir = Path(study.run_dir)
    process_state()  # before anything else touches Accelerate's state
    problems = load_run_problems(run_dir, "train")
    summaries: dict[str, dict] = {}
    for index, spec in enumerate(study.students):
        if only and spec.name not in only:
            continue
        seeds = replicate_seeds(study, spec)
        for seed in seeds:
            label = replicate_label(spec.name, seed)
            try:
                inputs = student_inputs(study, index, problems)
                if not force and is_trained(study, index, inputs, seed):
                    summaries[label] = {"student": spec.name, "skipped": "already trained from these inputs"}
                    continue
                summaries[label] = train_student(
                    study, index, problems, progress=progress, inputs=inputs, seed=seed
                )
            except UserError as exc:
                if (len(study.students) == 1 and len(seeds) == 1) or only:
                    raise
                summaries[label] = {"student": spec.name, "error": str(exc)}
    if process_state().is_main_process:
        # Parallel `train --student X` jobs each add their own entries: merged under a lock, never
        # one job's file over another's.
        merge_json(run_dir / "students" / "summary.json", summaries)
    return summaries

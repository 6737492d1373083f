"""The training loop: one readable file over Accelerate (DDP, FSDP and DeepSpeed come from its config).

Per optimizer step: `grad_accumulation` micro-batches of length-grouped examples, the TinyLLM loss
(weighted answer and rationale tasks, scored chunk by chunk over target positions by
`train.chunked_loss`, plus an optional white-box KL term against local teachers),
clipping, the schedule. Every `checkpoint_every` steps the full state (model, optimizer, scheduler,
RNG, position in the data) is saved atomically; a rerun resumes from the newest complete checkpoint
and ends where an uninterrupted run would. `train_log.jsonl` gets a line every `log_every` steps.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from scalingdown.artifacts import read_json, write_json
from scalingdown.config import Hyperparameters
from scalingdown.errors import UserError
from scalingdown.train.batching import collate, length_grouped_batches, random_batches
from scalingdown.train.chunked_loss import StudentLoss
from scalingdown.train.objective import multitask_loss, per_task_means
from scalingdown.train.white_box import WhiteBox, collate_teacher, white_box_term

STATE_FILE = "trainer_state.json"  # written last into a checkpoint: its presence marks it complete


@dataclass
class TrainResult:
    steps: int
    final_loss: float
    losses: list[float] = field(default_factory=list)  # per optimizer step
    tokens_per_second: float = 0.0
    resumed_from: int | None = None
    seconds: float = 0.0
    # The gathered weights when FSDP or DeepSpeed sharded them (complete on the main process only);
    # None when the model object holds them whole (one process, DDP), which is then saved as it is.
    state_dict: dict | None = field(default=None, repr=False)


def fit_deepspeed_batch(config: dict, hp: Hyperparameters) -> None:
    """Write our micro-batch and accumulation into a DeepSpeed config (in place).

    Accelerate takes DeepSpeed's micro-batch from a dataloader given to `prepare`, which this loop
    does not use (it batches by length itself), so without this `prepare` fails; and where the two
    accumulation counts differ Accelerate keeps DeepSpeed's, which would make a "step" a micro-batch.
    """
    config["train_micro_batch_size_per_gpu"] = hp.batch_size
    config["gradient_accumulation_steps"] = hp.grad_accumulation


def mixed_precision(setting: str) -> str:
    if setting != "auto":
        return setting
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "no"


def _schedule(optimizer, hp: Hyperparameters, total_steps: int):
    from transformers import (
        get_constant_schedule_with_warmup,
        get_cosine_schedule_with_warmup,
        get_linear_schedule_with_warmup,
    )

    warmup = int(hp.warmup_ratio * total_steps)
    if hp.schedule == "cosine":
        return get_cosine_schedule_with_warmup(optimizer, warmup, total_steps)
    if hp.schedule == "linear":
        return get_linear_schedule_with_warmup(optimizer, warmup, total_steps)
    return get_constant_schedule_with_warmup(optimizer, warmup)


def latest_checkpoint(folder: Path) -> Path | None:
    """The newest checkpoint whose state file exists (a half-written one has none)."""
    done = [p for p in folder.glob("step-*") if (p / STATE_FILE).is_file()]
    return max(done, key=lambda p: int(p.name.split("-")[1]), default=None)


def _epoch_batches(features: Sequence[dict], hp: Hyperparameters, seed: int, epoch: int) -> list[list[int]]:
    if hp.group_by_length:
        return length_grouped_batches([f["length"] for f in features], hp.batch_size, seed=seed, epoch=epoch)
    return random_batches(len(features), hp.batch_size, seed=seed, epoch=epoch)


def train(
    model: torch.nn.Module,
    *,
    features: Sequence[dict],
    weights: Sequence[float],
    num_tasks: int,
    task_names: Sequence[str],
    pad_id: int,
    is_seq2seq: bool,
    hp: Hyperparameters,
    work_dir: Path,
    seed: int,
    white_box: Sequence[WhiteBox] = (),
    kl_weight: float = 0.0,
    kl_kind: str = "forward_kl",
    progress: bool = True,
    label: str = "student",
) -> TrainResult:
    """Train `model` in place on tokenised `features` (see `train.batching.tokenize_examples`).

    `weights[i]` is example i's loss weight (`train.objective.example_weight`); checkpoints and the
    log go to `work_dir`. Returns the loss of every optimizer step.
    """
    from accelerate import Accelerator
    from accelerate.utils import DistributedType, set_seed

    from scalingdown.progress import Progress

    if not features:
        raise UserError("no training examples (no kept rationales and no answer tasks?)")
    # Tied input/output embeddings make Accelerate warn at every checkpoint that it saved one copy.
    logging.getLogger("accelerate.utils.other").setLevel(logging.ERROR)
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(),  # several CPU processes: data parallel over gloo
        gradient_accumulation_steps=hp.grad_accumulation,
        mixed_precision=mixed_precision(hp.mixed_precision),
        log_with=_trackers(hp.report_to) or None,
        project_dir=str(work_dir),
    )
    if accelerator.state.deepspeed_plugin is not None:
        fit_deepspeed_batch(accelerator.state.deepspeed_plugin.deepspeed_config, hp)
    set_seed(seed)
    group = hp.grad_accumulation * accelerator.num_processes  # micro-batches per optimizer step
    steps_per_epoch = len(_epoch_batches(features, hp, seed, 0)) // group
    if steps_per_epoch < 1:
        raise UserError(
            f"hyperparameters.batch_size: {len(features)} examples do not fill one optimizer step of "
            f"{hp.batch_size} x grad_accumulation {hp.grad_accumulation} x {accelerator.num_processes} "
            "process(es); lower batch_size or grad_accumulation"
        )
    total_steps = hp.max_steps or max(1, math.ceil(hp.epochs * steps_per_epoch))

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=hp.learning_rate, weight_decay=hp.weight_decay)
    scheduler = _schedule(optimizer, hp, total_steps)
    # The scheduler stays outside `prepare`: Accelerate would step it once per process, while ours
    # counts optimizer steps already. It is registered so checkpoints hold its state.
    model, optimizer = accelerator.prepare(model, optimizer)
    # FSDP 2 (configs/accelerate/fsdp.yaml) replaces every parameter with a sharded DTensor: clipping
    # the list taken before `prepare` would clip tensors that never get a gradient, i.e. nothing.
    params = [p for p in model.parameters() if p.requires_grad]
    accelerator.register_for_checkpointing(scheduler)
    # Cross-entropy over target positions in chunks, never the (tokens x vocab) logits whole; FSDP and
    # ZeRO-3 keep the head's weight sharded outside the model's forward, so they score full logits.
    sharded = accelerator.distributed_type == DistributedType.FSDP or (
        accelerator.distributed_type == DistributedType.DEEPSPEED
        and accelerator.state.deepspeed_plugin.zero_stage == 3
    )
    student_loss = StudentLoss(
        accelerator.unwrap_model(model),
        is_seq2seq=is_seq2seq,
        chunked=not sharded,
        autocast=accelerator.autocast,
    )
    for teacher in white_box:
        teacher.model.to(accelerator.device).eval().requires_grad_(False)
    if hp.report_to:
        accelerator.init_trackers("scalingdown", config=hp.model_dump(mode="json"))

    checkpoints = work_dir / "checkpoints"
    log_path = work_dir / "train_log.jsonl"
    work_dir.mkdir(parents=True, exist_ok=True)
    step, epoch, micro_in_epoch, losses = 0, 0, 0, []
    resumed = latest_checkpoint(checkpoints)
    if resumed is not None:
        accelerator.load_state(str(resumed))
        state = read_json(resumed / STATE_FILE)
        step, epoch, micro_in_epoch, losses = (
            state["step"],
            state["epoch"],
            state["micro_in_epoch"],
            state["losses"],
        )
        _truncate_log(log_path, step)
    weight_tensor = torch.tensor(list(weights), dtype=torch.float32)
    started, tokens = time.perf_counter(), 0
    task_sum, task_count = torch.zeros(num_tasks), torch.zeros(num_tasks)
    window: list[float] = []
    bar = Progress(total_steps, f"train {label}", unit="steps", initial=step, enabled=progress)
    model.train()
    while step < total_steps:
        batches = _epoch_batches(features, hp, seed, epoch)
        # An epoch ends on a whole step for every process: the tail that does not fill one is left out
        # (it differs from epoch to epoch). Then each process takes every num_processes-th micro-batch
        # and all hold the same number, so DDP averages exactly what one process with num_processes
        # times the accumulation would, every step pairs micro-batches of one epoch, and the position
        # a checkpoint records (the main process's) is every process's position.
        batches = batches[: len(batches) - len(batches) % group]
        mine = batches[accelerator.process_index :: accelerator.num_processes]
        for position in range(micro_in_epoch, len(mine)):
            index = mine[position]
            chosen = [features[i] for i in index]
            batch = collate(chosen, pad_id=pad_id, is_seq2seq=is_seq2seq)
            if white_box:
                batch.update(collate_teacher(chosen, pad_id))
            batch = {k: v.to(accelerator.device) for k, v in batch.items()}
            with accelerator.accumulate(model), _batch_must_fit(hp):
                per_example, student_logits = student_loss(model, batch)
                loss = multitask_loss(per_example, weight_tensor[index].to(per_example.device))
                if white_box:
                    loss = loss + kl_weight * white_box_term(
                        student_logits, batch, white_box, kl_kind, is_seq2seq
                    )
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(params, hp.max_grad_norm)
                optimizer.step()
                if accelerator.sync_gradients:
                    scheduler.step()
                optimizer.zero_grad()
            sums, counts = per_task_means(per_example.detach().cpu(), batch["task"].cpu(), num_tasks)
            task_sum, task_count = task_sum + sums, task_count + counts
            tokens += int(batch["attention_mask"].sum())
            window.append(loss.item())
            if not accelerator.sync_gradients:
                continue
            step += 1
            step_loss = _mean_across(accelerator, sum(window) / len(window))
            losses.append(step_loss)
            window = []
            bar.update(1)
            bar.set_postfix(loss=f"{step_loss:.3f}")
            if step % hp.log_every == 0 or step == total_steps:
                elapsed = time.perf_counter() - started
                _log(
                    accelerator,
                    log_path,
                    step,
                    epoch,
                    step_loss,
                    scheduler,
                    task_names,
                    task_sum,
                    task_count,
                    tokens * accelerator.num_processes / max(elapsed, 1e-9),
                )
                task_sum, task_count = torch.zeros(num_tasks), torch.zeros(num_tasks)
            if step % hp.checkpoint_every == 0 or step == total_steps:
                _checkpoint(accelerator, checkpoints, step, epoch, position + 1, losses, hp.keep_checkpoints)
            if step >= total_steps:
                break
        else:
            epoch, micro_in_epoch = epoch + 1, 0
            continue
        break
    bar.close()
    for tracker in accelerator.trackers:  # not end_training(): the stage still needs the process group
        tracker.finish()
    seconds = time.perf_counter() - started
    state_dict = None
    if accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        # Sharded (FSDP, ZeRO-3) or cast weights: gather them whole; every process must take part.
        state_dict = accelerator.get_state_dict(model)
    model = accelerator.unwrap_model(model)
    return TrainResult(
        steps=step,
        final_loss=losses[-1] if losses else float("nan"),
        losses=losses,
        tokens_per_second=tokens * accelerator.num_processes / max(seconds, 1e-9),
        resumed_from=int(resumed.name.split("-")[1]) if resumed else None,
        seconds=seconds,
        state_dict=state_dict,
    )


@contextmanager
def _batch_must_fit(hp: Hyperparameters) -> Iterator[None]:
    """Out of memory in a step is a setting to change, not a crash; the checkpoints stay as they were."""
    try:
        yield
    except torch.OutOfMemoryError:
        raise UserError(
            f"hyperparameters.batch_size: a batch of {hp.batch_size} examples (up to {hp.max_length} tokens) "
            "does not fit in memory; lower batch_size or max_length and raise grad_accumulation"
        ) from None


def _mean_across(accelerator, value: float) -> float:
    if accelerator.num_processes == 1:
        return value
    tensor = torch.tensor([value], device=accelerator.device)
    return float(accelerator.reduce(tensor, reduction="mean").item())


def _log(
    accelerator, path, step, epoch, loss, scheduler, task_names, task_sum, task_count, tokens_per_s
) -> None:
    per_task = {
        name: float(task_sum[i] / task_count[i]) for i, name in enumerate(task_names) if task_count[i] > 0
    }
    record = {
        "step": step,
        "epoch": epoch,
        "loss": loss,
        "task_losses": per_task,
        "learning_rate": scheduler.get_last_lr()[0],
        "tokens_per_second": tokens_per_s,
    }
    if accelerator.is_main_process:
        with path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
    accelerator.log(
        {
            "loss": loss,
            "learning_rate": record["learning_rate"],
            **{f"loss/{k}": v for k, v in per_task.items()},
        },
        step=step,
    )


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines past a resumed checkpoint: the resumed run writes them again."""
    if not path.exists():
        return
    kept = [line for line in path.read_text(encoding="utf-8").splitlines() if _line_step(line) <= step]
    path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")


def _line_step(line: str) -> int:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return 1 << 62  # a line cut by a crash: dropped


def _checkpoint(accelerator, folder: Path, step, epoch, micro_in_epoch, losses, keep: int) -> None:
    """Save the whole training state atomically; keep the newest `keep` checkpoints."""
    final = folder / f"step-{step:06d}"
    tmp = folder / f".step-{step:06d}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    if accelerator.is_main_process:
        write_json(
            tmp / STATE_FILE,
            {"step": step, "epoch": epoch, "micro_in_epoch": micro_in_epoch, "losses": losses},
        )
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        done = sorted(
            (p for p in folder.glob("step-*") if (p / STATE_FILE).is_file()),
            key=lambda p: int(p.name.split("-")[1]),
        )
        for old in done[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def _trackers(names: Sequence[str]) -> list[str]:
    """The asked-for trackers that are installed; the others are named in a warning."""
    import importlib.util
    import warnings

    modules = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}
    found = [n for n in names if importlib.util.find_spec(modules[n]) is not None]
    missing = sorted(set(names) - set(found))
    if missing:
        warnings.warn(
            f"hyperparameters.report_to: not installed, not logging to {', '.join(missing)}", stacklevel=2
        )
    return found

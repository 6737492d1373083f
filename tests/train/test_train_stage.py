"""The train stage end to end on the synthetic task with tiny real models.

Rationales come from the teach stage (two `replay` teachers reading worked solutions), so the path
is the one a study takes: teach -> train -> eval with the student's own prompt format.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from scalingdown.artifacts import read_json, read_jsonl
from scalingdown.config_file import parse_config
from scalingdown.data.schema import write_problems
from scalingdown.data.synthetic import generate
from scalingdown.errors import UserError
from scalingdown.evaluate.prompts import worked_solution
from scalingdown.teach.stage import run_teach_stage
from scalingdown.train.stage import run_train_stage

TINY = {
    "arch": "llama",
    "hidden_size": 48,
    "num_layers": 2,
    "num_heads": 4,
    "vocab_size": 320,
    "max_positions": 256,
}
FAST = {
    "batch_size": 16,
    "learning_rate": 3e-3,
    "warmup_ratio": 0.05,
    "log_every": 5,
    "checkpoint_every": 10,
    "max_length": 160,
    "mixed_precision": "no",
}


def _reworded(text: str) -> str:
    """A second teacher's style: the same steps, said differently."""
    return text.replace(" starts with ", " has ").replace("Then ", "Next, ")


@pytest.fixture(scope="module")
def taught_run(tmp_path_factory) -> Path:
    """A run directory with synthetic problems and two teachers' verified rationales."""
    root = tmp_path_factory.mktemp("taught")
    train = generate(240, seed=11, split="train", max_steps=1, max_value=9)
    test = generate(60, seed=12, split="test", max_steps=1, max_value=9)
    run = root / "run"
    write_problems(run / "data" / "train.jsonl", train)
    write_problems(run / "data" / "test.jsonl", test)
    for name, style in (("careful", worked_solution), ("chatty", lambda p: _reworded(worked_solution(p)))):
        (root / f"{name}.jsonl").write_text(
            "".join(json.dumps({"id": p.id, "text": style(p)}) + "\n" for p in train)
        )
    study = parse_config(
        {
            "run_dir": str(run),
            "teachers": [
                {"name": n, "backend": "replay", "model": str(root / f"{n}.jsonl"), "num_examples": 0}
                for n in ("careful", "chatty")
            ],
            "teach": {"free_eval_problems": 0},
        }
    )
    summaries = run_teach_stage(study, progress=False)
    assert all(s["verified"] == 240 for s in summaries.values())
    return run


def _study(run: Path, **student) -> object:
    spec = {
        "name": "s",
        "tiny": TINY,
        "method": "full",
        "hyperparameters": {**FAST, "max_steps": 12},
        **student,
    }
    return parse_config(
        {
            "run_dir": str(run),
            "seed": 0,
            "students": [spec],
            "teachers": [{"name": n, "backend": "replay", "model": "unused"} for n in ("careful", "chatty")],
        }
    )


def test_a_student_learns_both_teachers_and_is_saved_for_eval(taught_run, tmp_path):
    run = tmp_path / "run"
    _copy_run(taught_run, run)
    summary = run_train_stage(_study(run), progress=False)["s"]
    out = run / "students" / "s"
    meta = read_json(out / "scalingdown.json")
    assert meta["format"] == "multitask" and "{question}" in meta["prompt_template"]
    assert meta["teachers"] == ["careful", "chatty"]
    assert set(meta["examples"]) == {"answer", "rationale:careful", "rationale:chatty"}
    assert summary["steps"] == 12 and len(meta["losses"]) == 12
    assert (out / "README.md").is_file() and (out / "config.json").is_file()
    log = read_jsonl(out / "train_log.jsonl")
    assert [r["step"] for r in log] == [5, 10, 12]
    assert set(log[0]["task_losses"]) <= set(meta["examples"]) and log[0]["tokens_per_second"] > 0
    # A second run with the same config skips; --force trains again.
    assert run_train_stage(_study(run), progress=False)["s"].get("skipped")


def test_seeded_tiny_run_pins_its_losses(taught_run, tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    _copy_run(taught_run, first)
    _copy_run(taught_run, second)
    losses_a = read_json_losses(first)
    losses_b = read_json_losses(second)
    assert losses_a == pytest.approx(losses_b, abs=1e-6)  # same seed, same losses
    assert losses_a[-1] < losses_a[0]
    assert losses_a[:3] == pytest.approx(PINNED_FIRST_LOSSES, abs=2e-3)


# Measured once with torch 2.13.0 (CPU) for the run above; a change here means the objective, the
# batching or the initialisation changed - check which before re-pinning.
# The loss is gamma*L_answer + sum_i alpha_i*L_rationale_i: three tasks near ln(vocab) = 5.77 each.
PINNED_FIRST_LOSSES = [17.3363, 16.4465, 15.7229]


def test_gradient_checkpointing_trains_the_same_student_and_leaves_it_done(taught_run, tmp_path):
    plain, checkpointed = tmp_path / "plain", tmp_path / "checkpointed"
    for run in (plain, checkpointed):
        _copy_run(taught_run, run)
    hp = {**FAST, "max_steps": 4}
    on = {**hp, "gradient_checkpointing": True}
    run_train_stage(_study(plain, method="lora", hyperparameters=hp), progress=False)
    # It changes memory, not the result: a student trained without it is not retrained with it.
    assert run_train_stage(_study(plain, method="lora", hyperparameters=on), progress=False)["s"].get(
        "skipped"
    )
    run_train_stage(_study(checkpointed, method="lora", hyperparameters=on), progress=False)
    meta = {run: read_json(run / "students" / "s" / "scalingdown.json") for run in (plain, checkpointed)}
    assert meta[checkpointed]["hyperparameters"]["gradient_checkpointing"] is True
    assert meta[checkpointed]["losses"] == pytest.approx(meta[plain]["losses"], abs=1e-6)
    assert meta[checkpointed]["inputs_digest"] == meta[plain]["inputs_digest"]


def read_json_losses(run: Path) -> list[float]:
    run_train_stage(_study(run), progress=False)
    return read_json(run / "students" / "s" / "scalingdown.json")["losses"]


def _copy_run(src: Path, dst: Path) -> None:
    import shutil

    shutil.copytree(src / "data", dst / "data")
    shutil.copytree(src / "teachers", dst / "teachers")


def _write_config(path: Path, run: Path, steps: int) -> Path:
    study = {
        "run_dir": str(run),
        "seed": 0,
        "teachers": [{"name": n, "backend": "replay", "model": "unused"} for n in ("careful", "chatty")],
        "students": [
            {
                "name": "s",
                "tiny": TINY,
                "method": "full",
                "hyperparameters": {**FAST, "max_steps": steps, "checkpoint_every": 5},
            }
        ],
    }
    path.write_text(yaml.safe_dump(study))
    return path


@pytest.mark.slow  # 40-50 s of subprocesses: kept out of the default run's 10 minutes
def test_kill_9_during_training_resumes_and_ends_with_the_same_loss(taught_run, tmp_path):
    env = {**os.environ, "TQDM_DISABLE": "1"}
    clean, crashed = tmp_path / "clean", tmp_path / "crashed"
    _copy_run(taught_run, clean)
    _copy_run(taught_run, crashed)
    steps = 30
    cmd = [sys.executable, "-m", "scalingdown.cli", "train"]
    assert (
        subprocess.run(
            [*cmd, str(_write_config(tmp_path / "clean.yaml", clean, steps))],
            env=env,
            capture_output=True,
            timeout=600,
        ).returncode
        == 0
    )
    config = _write_config(tmp_path / "crashed.yaml", crashed, steps)
    proc = subprocess.Popen([*cmd, str(config)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    checkpoints = crashed / "checkpoints" / "s" / "checkpoints"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (checkpoints / "step-000010" / "trainer_state.json").exists():
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (crashed / "students" / "s" / "scalingdown.json").exists(), "killed before it finished"
    resumed = subprocess.run([*cmd, str(config)], env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    meta = read_json(crashed / "students" / "s" / "scalingdown.json")
    reference = read_json(clean / "students" / "s" / "scalingdown.json")
    assert meta["resumed_from_step"] >= 10
    assert meta["steps"] == reference["steps"] == steps
    assert meta["final_loss"] == pytest.approx(reference["final_loss"], rel=1e-3)
    assert meta["losses"] == pytest.approx(reference["losses"], rel=1e-3)


@pytest.mark.parametrize(
    ("student", "message"),
    [
        ({"teachers": ["careful", "nobody"]}, r"students\[0\]\.teachers\[1\]: 'nobody' is not a teacher"),
        ({"rationale_weights": {"nobody": 2.0}}, r"students\[0\]\.rationale_weights\.nobody"),
        (
            {"method": "lora", "lora": {"target_modules": ["q_projj"]}},
            r"students\[0\]\.lora\.target_modules: .*q_projj",
        ),
        ({"method": "qlora"}, r"students\[0\]\.method: qlora needs a CUDA GPU"),
        ({"hyperparameters": {"batch_size": 0}}, r"students\[0\]\.hyperparameters\.batch_size"),
    ],
)
def test_bad_input_is_one_clear_line_and_writes_no_student(taught_run, tmp_path, student, message):
    run = tmp_path / "run"
    _copy_run(taught_run, run)
    if student.get("method") == "qlora" and _has_cuda():
        pytest.skip("a CUDA machine can run QLoRA")
    with pytest.raises(UserError, match=message):
        run_train_stage(_study(run, **student), progress=False)
    assert not (run / "students" / "s").exists()


def test_empty_rationales_are_skipped_and_no_examples_is_an_error(taught_run, tmp_path):
    run = tmp_path / "run"
    _copy_run(taught_run, run)
    for name in ("careful", "chatty"):
        path = run / "teachers" / name / "rationales.jsonl"
        rows = [{**r, "text": ""} for r in read_jsonl(path)]
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(UserError, match="no training examples"):
        run_train_stage(_study(run, format="single"), progress=False)


def test_a_batch_that_does_not_fit_is_a_clear_error_and_leaves_checkpoints_whole(
    taught_run, tmp_path, monkeypatch
):
    import torch

    from scalingdown.train import loop

    run = tmp_path / "run"
    _copy_run(taught_run, run)
    calls = {"n": 0}
    original = loop.multitask_loss

    def fails_late(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 11:  # after the step-10 checkpoint
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return original(*args, **kwargs)

    monkeypatch.setattr(loop, "multitask_loss", fails_late)
    with pytest.raises(UserError, match=r"hyperparameters\.batch_size: a batch of 16 .* does not fit"):
        run_train_stage(_study(run), progress=False)
    checkpoint = run / "checkpoints" / "s" / "checkpoints" / "step-000010"
    assert (checkpoint / "trainer_state.json").is_file()
    assert not list(checkpoint.parent.glob(".*.tmp"))


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def test_trained_student_beats_the_same_model_untrained(taught_run, tmp_path):
    """The issue's "done when": eval with the student's own prompt format, above the untrained model."""
    from scalingdown.config import EvalConfig
    from scalingdown.data.stage import load_run_problems
    from scalingdown.evaluate.stage import evaluate_model

    run = tmp_path / "run"
    _copy_run(taught_run, run)
    hyper = {**FAST, "max_steps": 150, "learning_rate": 3e-3}
    run_train_stage(_study(run, hyperparameters=hyper), progress=False)
    test = load_run_problems(run, "test")
    settings = EvalConfig(max_new_tokens=16, batch_size=32)
    trained = evaluate_model(
        test,
        name="s",
        model_path=str(run / "students" / "s"),
        settings=settings,
        out_dir=tmp_path / "eval" / "s",
        prompt_format="student",
        progress=False,
    )
    base = evaluate_model(
        test,
        name="base",
        model_path=str(run / "students" / ".base" / "s"),
        settings=settings,
        out_dir=tmp_path / "eval" / "base",
        prompt_format="zero-shot",
        progress=False,
    )
    assert trained["accuracy"]["correct"] > base["accuracy"]["correct"]
    assert trained["prompt_format"] == "student"
    print(f"trained {trained['accuracy']} vs untrained {base['accuracy']}")


@pytest.mark.slow  # 40-50 s of subprocesses: kept out of the default run's 10 minutes
def test_two_processes_match_one_process_across_an_epoch_end_and_a_resume(taught_run, tmp_path):
    """DDP on 2 CPU processes (gloo, torchrun) against 1 process accumulating 2 micro-batches per step.

    720 examples in batches of 16 make 45 micro-batches an epoch: odd, so before epochs were cut to
    whole steps the two processes held 23 and 22 and paired micro-batches of different epochs from
    step 23 on. The two-process run is also killed after its step-24 checkpoint and resumed, which
    must restore every process's position, not only the main one's.
    """
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    steps = 30  # 22 steps an epoch: the run crosses one epoch end
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(_free_port()),
        "-m",
        "scalingdown.cli",
    ]
    runs = {}
    for label, launcher, accumulation in (
        ("one", [sys.executable, "-m", "scalingdown.cli"], 2),
        ("two", torchrun, 1),
    ):
        run = tmp_path / label
        _copy_run(taught_run, run)
        config = tmp_path / f"{label}.yaml"
        study = yaml.safe_load(_write_config(config, run, steps=steps).read_text())
        study["students"][0]["hyperparameters"].update(
            {"batch_size": 16, "grad_accumulation": accumulation, "checkpoint_every": 12}
        )
        config.write_text(yaml.safe_dump(study))
        command = [*launcher, "train", str(config)]
        if label == "two":
            proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            done_24 = run / "checkpoints" / "s" / "checkpoints" / "step-000024" / "trainer_state.json"
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline and not done_24.exists() and proc.poll() is None:
                time.sleep(0.05)
            _kill_tree(proc.pid)  # torchrun's workers run in sessions of their own
            proc.wait()
            assert done_24.exists() and not (run / "students" / "s" / "scalingdown.json").exists()
            command[command.index("--master_port") + 1] = str(_free_port())
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        runs[label] = read_json(run / "students" / "s" / "scalingdown.json")
    assert runs["one"]["steps"] == runs["two"]["steps"] == steps
    assert runs["two"]["resumed_from_step"] == 24
    assert runs["two"]["losses"] == pytest.approx(runs["one"]["losses"], rel=1e-4)


def test_a_lora_student_is_the_same_whatever_was_trained_before_it(taught_run, tmp_path):
    """The adapter's random initialisation is seeded: one `run` of both students and a job that
    trains only the second (a SLURM array task) give the second the same losses; and jobs that
    train one student each keep each other's entries in students/summary.json."""
    spec = {"tiny": TINY, "method": "lora", "lora": {"r": 4}, "hyperparameters": {**FAST, "max_steps": 3}}
    config = {
        "seed": 0,
        "students": [{"name": "first", **spec}, {"name": "second", **spec}],
        "teachers": [{"name": n, "backend": "replay", "model": "unused"} for n in ("careful", "chatty")],
    }
    both, alone = tmp_path / "both", tmp_path / "alone"
    for run in (both, alone):
        _copy_run(taught_run, run)
    run_train_stage(parse_config({**config, "run_dir": str(both)}), progress=False)
    import torch

    torch.rand(1000)  # whatever else this process did before
    study = parse_config({**config, "run_dir": str(alone)})
    run_train_stage(study, only=["second"], progress=False)
    losses = {
        run: read_json(run / "students" / "second" / "scalingdown.json")["losses"] for run in (both, alone)
    }
    assert losses[alone] == pytest.approx(losses[both], abs=1e-6)
    run_train_stage(study, only=["first"], progress=False)
    summary = read_json(alone / "students" / "summary.json")
    assert set(summary) == {"first", "second"} and summary["second"]["steps"] == 3


def _kill_tree(pid: int) -> None:
    """SIGKILL a process and all its descendants (read from /proc), children first."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    order, todo = [], [pid]
    while todo:
        current = todo.pop()
        order.append(current)
        todo.extend(children.get(current, []))
    for target in reversed(order):
        try:
            os.kill(target, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_deepspeed_gets_our_micro_batch_and_accumulation():
    """Accelerate sizes DeepSpeed's batch from a dataloader the loop never gives it, and keeps DeepSpeed's
    accumulation over ours: the loop writes both into the plugin's config (as shipped, 1 and 'auto')."""
    from scalingdown.config import Hyperparameters
    from scalingdown.train.loop import fit_deepspeed_batch

    config = {
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": 1,
        "zero_optimization": {},
    }
    fit_deepspeed_batch(config, Hyperparameters(batch_size=6, grad_accumulation=4))
    assert config["train_micro_batch_size_per_gpu"] == 6 and config["gradient_accumulation_steps"] == 4
    assert config["zero_optimization"] == {}

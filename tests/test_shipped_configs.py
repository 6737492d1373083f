"""The shipped real-study configs, Accelerate configs, SLURM templates and conda environment (issue 6).

The SLURM templates are rendered by running them with bash against stub `vllm`, `curl`, `accelerate`
and `scalingdown` commands that record their arguments, so the test checks the command lines a job
would really run, not the template's text.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from scalingdown.config_file import load_config

REPO = Path(__file__).resolve().parents[1]
STUDIES = [REPO / "configs" / "gsm8k.yaml", REPO / "configs" / "aqua.yaml"]
ACCELERATE = REPO / "configs" / "accelerate"
SLURM = REPO / "scripts" / "slurm"
LADDER = [
    "HuggingFaceTB/SmolLM2-135M",
    "HuggingFaceTB/SmolLM2-360M",
    "Qwen/Qwen2.5-0.5B",
    "Qwen/Qwen2.5-1.5B",
]


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.name)
def test_real_study_config_is_complete(path: Path) -> None:
    study = load_config(path)
    assert study.data.dataset in ("gsm8k", "aqua_rat") and study.data.path is None  # from the Hub
    assert [t.model for t in study.teachers] == [
        "Qwen/Qwen2.5-7B-Instruct",
        "meta-llama/Llama-3.1-8B-Instruct",
    ]
    ports = []
    for teacher in study.teachers:
        assert teacher.backend == "openai" and teacher.options.get("api_key_env") is None
        (url,) = teacher.options["base_urls"]
        assert url.startswith("http://localhost:") and url.endswith("/v1")
        ports.append(url.split(":")[2].split("/")[0])
        assert (teacher.sampling.temperature, teacher.sampling.n, teacher.sampling.max_tokens) == (
            0.7,
            2,
            512,
        )
        assert (teacher.num_examples, teacher.example_selection) == (2, "tfidf")
    assert ports == ["8000", "8001"]
    distilled = [s for s in study.students if s.teachers is None]
    assert [s.path for s in distilled] == LADDER
    assert all(s.method == "lora" and s.format == "multitask" for s in study.students)
    baselines = [s.name for s in study.students if s.teachers == []]
    assert baselines and baselines[0] in study.report.references
    few_shot = [m for m in study.models if m.prompt == "few-shot"]
    assert [m.path for m in few_shot] == ["meta-llama/Llama-3.2-3B-Instruct"]
    assert few_shot[0].name in study.report.references


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.name)
def test_real_study_dry_runs_offline(path: Path, tmp_path: Path) -> None:
    # cwd is empty, so the plan sizes the data set from the config, never from an earlier run's files.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1", "COLUMNS": "200"}
    result = subprocess.run(
        [sys.executable, "-m", "scalingdown.cli", "run", str(path), "--dry-run"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout + result.stderr  # rich may write the plan to either stream
    study = load_config(path)
    for student in study.students:
        assert student.name in out and student.path in out
    assert "estimated teacher cost:" in out
    assert "warning" not in out  # every reference names a model of the study
    expected_train = "7,473" if study.data.dataset == "gsm8k" else f"{study.data.train_limit:,}"
    assert f"{expected_train} train" in out
    assert not (tmp_path / study.run_dir).exists()  # a dry run makes nothing


@pytest.mark.parametrize(
    ("name", "kind", "stage"),
    [
        ("ddp", "MULTI_GPU", None),
        ("fsdp", "FSDP", None),
        ("deepspeed_zero2", "DEEPSPEED", 2),
        ("deepspeed_zero3", "DEEPSPEED", 3),
    ],
)
def test_accelerate_config_parses(name: str, kind: str, stage: int | None) -> None:
    from accelerate.commands.config.config_args import ClusterConfig

    path = ACCELERATE / f"{name}.yaml"
    raw = yaml.safe_load(path.read_text())
    assert raw["compute_environment"] == "LOCAL_MACHINE"
    config = ClusterConfig.from_yaml_file(str(path))  # rejects unknown keys and bad enum values
    assert config.distributed_type.value == kind
    assert (config.mixed_precision, config.num_processes, config.num_machines) == ("bf16", 8, 1)
    if kind == "FSDP":
        assert config.fsdp_config["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    if stage is not None:
        assert config.deepspeed_config["zero_stage"] == stage


@pytest.mark.parametrize("path", sorted(SLURM.glob("*")), ids=lambda p: p.name)
def test_slurm_script_syntax(path: Path) -> None:
    result = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


STUB = '#!/bin/bash\necho "$(basename "$0") $*" >> "$CALLS"\n'
VLLM_STUB = '#!/bin/bash\necho "vllm $*" >> "$CALLS"\nexec sleep 30\n'


def _render(tmp_path: Path, script: str, **env: str) -> subprocess.CompletedProcess:
    """Run a SLURM template as sbatch would (from the submit folder) with stubbed tools."""
    submit = tmp_path / "submit"
    if not submit.exists():
        shutil.copytree(SLURM, submit / "scripts" / "slurm")
        shutil.copy(REPO / "scripts" / "gpu_check.sh", submit / "scripts")
        stubs = tmp_path / "bin"
        stubs.mkdir()
        tools = {"vllm": VLLM_STUB, "curl": STUB, "scalingdown": STUB, "accelerate": STUB, "python": STUB}
        for tool, text in tools.items():
            (stubs / tool).write_text(text)
            (stubs / tool).chmod(0o755)
    base = {
        "PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin",  # no conda here: the setup warns and goes on
        "HOME": str(tmp_path),
        "SCRATCH": str(tmp_path / "scratch"),
        "SLURM_SUBMIT_DIR": str(submit),
        "CALLS": str(tmp_path / "calls.txt"),
    }
    (tmp_path / "calls.txt").write_text("")
    return subprocess.run(
        ["bash", str(submit / "scripts" / "slurm" / script)],
        capture_output=True,
        text=True,
        env={**base, **env},
        cwd=tmp_path,
        timeout=60,
    )


def _calls(tmp_path: Path) -> list[str]:
    return (tmp_path / "calls.txt").read_text().splitlines()


def test_teach_template_serves_waits_teaches(tmp_path: Path) -> None:
    result = _render(
        tmp_path,
        "teach_vllm.sbatch",
        CONFIG="configs/gsm8k.yaml",
        MODEL="Qwen/Qwen2.5-7B-Instruct",
        TEACHER="qwen2.5-7b",
        PORT="8001",
        GPUS="2",
    )
    assert result.returncode == 0, result.stderr
    calls = _calls(tmp_path)
    assert (
        calls[0] == "vllm serve Qwen/Qwen2.5-7B-Instruct --port 8001 --tensor-parallel-size 2" in calls
    )  # started in the background
    assert any(c.startswith("curl") and "http://localhost:8001/health" in c for c in calls)
    assert calls[-1] == "scalingdown teach configs/gsm8k.yaml --teacher qwen2.5-7b"
    assert (tmp_path / "scratch" / "hf_home").is_dir()  # HF_HOME went to scratch


@pytest.mark.parametrize(
    ("gpus", "tp", "flags"),
    [
        ("4", "1", "--tensor-parallel-size 1 --data-parallel-size 4"),
        ("4", "2", "--tensor-parallel-size 2 --data-parallel-size 2"),
        ("4", None, "--tensor-parallel-size 4"),
    ],
)
def test_teach_template_splits_gpus_into_tensor_and_data_parallel(tmp_path, gpus, tp, flags) -> None:
    env = {"CONFIG": "configs/gsm8k.yaml", "MODEL": "m", "GPUS": gpus, **({"TP": tp} if tp else {})}
    result = _render(tmp_path, "teach_vllm.sbatch", **env)
    assert result.returncode == 0, result.stderr
    calls = _calls(tmp_path)
    assert calls[0] == f"vllm serve m --port 8000 {flags}"
    assert calls[-1] == "scalingdown teach configs/gsm8k.yaml"  # no TEACHER: every teacher


def test_teach_template_refuses_a_tp_that_does_not_divide_the_gpus(tmp_path) -> None:
    result = _render(tmp_path, "teach_vllm.sbatch", CONFIG="c.yaml", MODEL="m", GPUS="4", TP="3")
    assert result.returncode == 1 and "TP=3 does not divide GPUS=4" in result.stderr
    assert _calls(tmp_path) == []


def test_templates_refuse_a_missing_config(tmp_path: Path) -> None:
    for script in ("teach_vllm.sbatch", "train_array.sbatch", "eval_report.sbatch"):
        result = _render(tmp_path, script, MODEL="m", STUDENTS="a", SLURM_ARRAY_TASK_ID="0")
        assert result.returncode != 0 and "set CONFIG" in result.stderr
        assert _calls(tmp_path) == []


def test_train_array_covers_the_gsm8k_ladder(tmp_path: Path) -> None:
    names = [s.name for s in load_config(STUDIES[0]).students]
    for task, name in enumerate(names):
        result = _render(
            tmp_path,
            "train_array.sbatch",
            CONFIG="configs/gsm8k.yaml",
            STUDENTS=" ".join(names),
            SLURM_ARRAY_TASK_ID=str(task),
            GPUS="4",
        )
        assert result.returncode == 0, result.stderr
        assert _calls(tmp_path) == [
            "accelerate launch --config_file configs/accelerate/ddp.yaml --num_processes 4 "
            f"-m scalingdown.cli train configs/gsm8k.yaml --student {name}"
        ]


def test_eval_report_template(tmp_path: Path) -> None:
    result = _render(tmp_path, "eval_report.sbatch", CONFIG="configs/aqua.yaml")
    assert result.returncode == 0, result.stderr
    assert _calls(tmp_path) == ["scalingdown eval configs/aqua.yaml", "scalingdown report configs/aqua.yaml"]


def test_environment_yml_installs_the_package() -> None:
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    assert env["name"] == "scalingDownEnv"
    deps = env["dependencies"]
    assert "python=3.11" in deps and "pip" in deps
    pip = next(d["pip"] for d in deps if isinstance(d, dict))
    assert any(line.startswith("-e .") for line in pip)


def test_gpu_check_template_runs_the_check_into_logs(tmp_path: Path) -> None:
    result = _render(tmp_path, "gpu_check.sbatch", SLURM_JOB_ID="77", TMPDIR="/node/local")
    assert result.returncode == 0, result.stderr
    assert _calls(tmp_path) == [
        "python -m scalingdown.gpucheck --out logs/gpu_check-77.json "
        "--work-dir /node/local/scalingdown-gpu-check"
    ]

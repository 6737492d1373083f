"""Data-parallel replicas (`ReplicaPool`) of the real `hf` backend on a tiny Llama, on the CPU.

Worker start-up (a spawned process imports torch and transformers) is the cost here, so one pool of
two replicas serves the tests that need a healthy pool, in file order: same answers as one replica,
then one replica killed, then both. The vLLM tests check the option and what reaches `vllm.LLM`
without vLLM installed.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import signal
import sys
import time

import pytest

from scalingdown.errors import UserError
from scalingdown.evaluate.prompts import zero_shot
from scalingdown.teach import Request, SamplingParams
from scalingdown.teach.hf_backend import HFBackend
from scalingdown.teach.replicas import ReplicaPool
from scalingdown.teach.vllm_backend import INSTALL_HINT, VLLMBackend

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # for the in-process reference runs

BOUND_S = 60  # a run with dead replicas must end well within this (it takes a few seconds)


@pytest.fixture(scope="module")
def options(tiny_dir) -> dict:
    return {"model": str(tiny_dir), "device": "cpu", "batch_size": 4}


@pytest.fixture(scope="module")
def pool(options):
    pool = ReplicaPool("hf", options, replicas=2)
    yield pool
    pool.close()


@pytest.fixture(scope="module")
def requests(problems) -> list[Request]:
    return [Request(f"q{i}", zero_shot(p)) for i, p in enumerate(problems[:12])]


@pytest.fixture(scope="module")
def reference(options, requests):
    """What one in-process replica answers, by max_tokens."""
    backend = HFBackend(options)
    answers = {n: backend.generate(requests, SamplingParams(max_tokens=n)) for n in (12, 24)}
    backend.close()
    return answers


def test_two_replicas_answer_like_one_in_order(pool, requests, reference):
    seen = []
    results = pool.generate(requests, SamplingParams(max_tokens=12), on_result=seen.append)

    assert [r.key for r in results] == [r.key for r in requests]
    assert all(r.ok for r in results)
    assert [r.texts for r in results] == [r.texts for r in reference[12]]
    assert len({tuple(r.texts) for r in results}) > 6  # the texts differ by prompt, so order shows
    tokens = [(r.prompt_tokens, r.completion_tokens) for r in results]
    assert tokens == [(r.prompt_tokens, r.completion_tokens) for r in reference[12]]
    assert sorted(r.key for r in seen) == sorted(r.key for r in requests)  # each key once
    pids = pool.worker_pids
    assert len(set(pids)) == 2 and os.getpid() not in pids
    # Reused, not restarted, by the next call.
    assert pool.generate(requests[:3], SamplingParams(max_tokens=12))[0].texts == results[0].texts
    assert pool.worker_pids == pids


def test_a_killed_replica_fails_only_its_chunk_in_flight(pool, requests, reference):
    pids = pool.worker_pids
    assert len(pids) == 2
    seen = []

    def kill_replica_0(result):
        seen.append(result)
        if len(seen) == 1:
            os.kill(pids[0], signal.SIGKILL)

    started = time.monotonic()
    results = pool.generate(requests, SamplingParams(max_tokens=24), on_result=kill_replica_0)
    assert time.monotonic() - started < BOUND_S

    assert [r.key for r in results] == [r.key for r in requests] and len(seen) == len(requests)
    failed = [r for r in results if not r.ok]
    assert len(failed) <= math.ceil(len(requests) / (4 * 2))  # at most the one chunk it held
    assert all(r.error == "replica 0 of 2 died (exit code -9)" and r.texts == [] for r in failed)
    # The survivor answered everything else, as one replica would have.
    for result, expected in zip(results, reference[24], strict=True):
        assert not result.ok or result.texts == expected.texts
    assert pool.worker_pids == [pids[1]]


def test_with_every_replica_killed_the_rest_fail_with_one_reason(pool, requests, reference):
    pids = pool.worker_pids  # the dead replica 0 is started again by this call, not before
    seen, killed = [], []

    def kill_all(result):
        seen.append(result)
        if len(seen) == 1:
            killed.extend(pool.worker_pids)
            for pid in killed:
                os.kill(pid, signal.SIGKILL)

    started = time.monotonic()
    results = pool.generate(requests, SamplingParams(max_tokens=24), on_result=kill_all)
    assert time.monotonic() - started < BOUND_S

    assert [r.key for r in results] == [r.key for r in requests] and len(seen) == len(requests)
    died = {f"replica {i} of 2 died (exit code -9)" for i in (0, 1)}
    failed = [r for r in results if not r.ok]
    assert failed and all(r.error in died for r in failed)
    assert len(failed) >= len(requests) - 2 * math.ceil(len(requests) / 8)  # only chunks done by then
    for result, expected in zip(results, reference[24], strict=True):
        assert not result.ok or result.texts == expected.texts
    assert pool.worker_pids == [] and len(pids) == 1 and len(killed) == 2 and pids[0] in killed


def test_an_exception_in_on_result_reaches_the_caller_and_stops_the_workers(pool, requests):
    started = []

    def explode(result):
        started.extend(pool.worker_pids)
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        pool.generate(requests, SamplingParams(max_tokens=24), on_result=explode)
    assert len(started) == 2 and pool.worker_pids == []
    assert not set(started) & {p.pid for p in multiprocessing.active_children()}


def test_a_bad_model_path_fails_every_request_with_one_line(tmp_path, options, requests):
    missing = tmp_path / "no-such-model"
    backend = HFBackend({**options, "model": str(missing), "data_parallel_size": 2})
    before = {p.pid for p in multiprocessing.active_children()}
    seen = []
    started = time.monotonic()
    results = backend.generate(requests, SamplingParams(max_tokens=4), on_result=seen.append)
    assert time.monotonic() - started < BOUND_S
    workers = {p.pid for p in multiprocessing.active_children()} - before
    assert len(workers) == 2  # the replicas run in their own processes, not here

    assert [r.key for r in results] == [r.key for r in requests] and len(seen) == len(requests)
    assert all(not r.ok and r.texts == [] for r in results)
    (error,) = {r.error for r in results}
    assert str(missing) in error and "\n" not in error
    backend.close()
    backend.close()  # idempotent
    assert not workers & {p.pid for p in multiprocessing.active_children()}


def test_hf_data_parallel_size_is_checked():
    assert HFBackend({"model": "m"}).options.data_parallel_size == 1
    with pytest.raises(UserError, match=r"^options\.data_parallel_size: "):
        HFBackend.from_options({"model": "m", "data_parallel_size": 0})
    with pytest.raises(UserError, match=r"^options\.data_parallel_size: each replica sees only its own GPU"):
        HFBackend.from_options({"model": "m", "device": "cuda:1", "data_parallel_size": 2})


def test_vllm_data_parallel_size_is_accepted_checked_and_not_given_to_the_engine():
    had_vllm = "vllm" in sys.modules
    backend = VLLMBackend.from_options(
        {"model": "org/m", "data_parallel_size": 4, "tensor_parallel_size": 2, "pipeline_parallel_size": 2}
    )
    assert backend.options.data_parallel_size == 4
    assert VLLMBackend({"model": "m"}).options.data_parallel_size == 1
    kwargs = backend.engine_kwargs()
    assert "data_parallel_size" not in kwargs
    assert kwargs["model"] == "org/m" and kwargs["tensor_parallel_size"] == 2
    assert set(kwargs) == set(backend.options.model_dump()) - {"data_parallel_size"}
    with pytest.raises(UserError, match=r"^options\.data_parallel_size: "):
        VLLMBackend.from_options({"model": "m", "data_parallel_size": 0})
    assert ("vllm" in sys.modules) == had_vllm  # none of this imported vLLM


def test_vllm_replicas_without_vllm_say_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` now fails as if not installed
    backend = VLLMBackend({"model": "m", "data_parallel_size": 2})
    before = multiprocessing.active_children()
    with pytest.raises(UserError, match="^" + INSTALL_HINT.replace("[", r"\[").replace("]", r"\]") + "$"):
        backend.generate([Request("q", "2 + 3 =")], SamplingParams())
    assert multiprocessing.active_children() == before  # no worker was started for it
    backend.close()


@pytest.mark.gpu
def test_more_gpus_than_visible_fail_every_request(options):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    from scalingdown.teach.replicas import visible_gpus

    visible = len(visible_gpus())
    pool = ReplicaPool("hf", options, replicas=visible + 1, gpus_per_replica=2)
    results = pool.generate([Request("a", "x"), Request("b", "y")], SamplingParams())
    expected = f"data_parallel_size {visible + 1} x 2 GPUs per replica needs {2 * visible + 2} GPUs, "
    assert all(r.error == f"{expected}{visible} visible" for r in results)
    assert pool.worker_pids == []
    pool.close()


@pytest.mark.slow  # 20 s of worker start-up; the pool's equivalence is tested above
def test_the_teach_stage_with_two_hf_replicas_writes_what_one_process_writes(tmp_path, tiny_dir, problems):
    """Through a study config, the stage and its answer cache: the option changes where, not what."""
    from scalingdown.artifacts import read_jsonl
    from scalingdown.config_file import parse_config
    from scalingdown.data.schema import write_problems
    from scalingdown.teach.stage import run_teach_stage

    outputs = {}
    for replicas in (1, 2):
        run = tmp_path / f"run-{replicas}"
        write_problems(run / "data" / "train.jsonl", problems[:12])
        write_problems(run / "data" / "test.jsonl", problems[12:14])
        teacher = {
            "name": "local",
            "backend": "hf",
            "model": str(tiny_dir),
            "options": {"device": "cpu", "batch_size": 4, "data_parallel_size": replicas},
            "num_examples": 0,
            "sampling": {"temperature": 0.0, "max_tokens": 24},
        }
        study = parse_config(
            {"run_dir": str(run), "seed": 0, "teachers": [teacher], "teach": {"policy": "keep"}}
        )
        summary = run_teach_stage(study, progress=False)["local"]
        assert "error" not in summary, summary
        rows = read_jsonl(run / "teachers" / "local" / "rationales.jsonl")
        outputs[replicas] = sorted((r["problem_id"], r["text"]) for r in rows)
    assert len(outputs[1]) == 12 and len({text for _, text in outputs[1]}) > 6  # texts differ by prompt
    assert outputs[2] == outputs[1]

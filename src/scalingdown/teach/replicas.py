"""Data parallel for local teacher backends: copies of one backend, each in its own process and GPUs.

vLLM's offline `LLM` is one engine (tensor/pipeline parallel inside it); data parallel offline means
one engine per GPU group in separate processes, and for a dense model independent replicas suffice.
`ReplicaPool(name, options, replicas=..., gpus_per_replica=...)` runs that many copies of a registered
backend ("vllm", "hf"), built from the options with `data_parallel_size=1`, in *spawn*ed workers
started by the first `generate` and reused after. Replica i gets GPUs `[i*g, (i+1)*g)` of the parent's
CUDA_VISIBLE_DEVICES list (0..n-1 when unset) as its own, set before it imports torch or vLLM; more
GPUs asked than visible fails every request with one line. Without CUDA nothing is pinned and each
replica gets `max(1, cpu_count // replicas)` torch threads.

Requests go out in chunks of `ceil(n / (4 * replicas))`, each to whichever replica is idle (a fast one
takes more), over one pipe per worker: a shared `multiprocessing.Queue` holds a lock while a worker
waits on it, and a worker killed then would lock out the rest. Results reach `on_result` as they
arrive (the caller's cache stores them mid-run); `generate` returns them in request order.

Failures are `Result`s, never exceptions or hangs: the parent polls every pipe and process sentinel.
A worker that cannot build its backend, or dies, fails the unanswered requests of its chunk in flight
with one line naming the replica (and exit code); other chunks go to the survivors; with none left,
every remaining request fails with the last such line. The next `generate` restarts a dead replica,
not one that could not build its backend. An exception from `on_result` closes the pool.

`close()` sends each worker a stop sentinel, joins with a timeout, then terminates; it is idempotent.
Workers are daemon processes, so an exiting parent takes them along; but a daemon may not start
children, as vLLM >= 0.8 does (vllm-project/vllm#18308), so each worker clears its own daemon flag
and also exits when a thread sees the parent's sentinel fire (even on SIGKILL).
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

from pydantic import BaseModel

from scalingdown.errors import exception_line
from scalingdown.teach.backend import OnResult, Request, Result, SamplingParams

Finish = Callable[[int, Result], None]  # records the result of the request at a position
Chunks = dict[int, "_Chunk"]  # chunk id -> chunk, for the chunks of one call still unanswered

POLL_S = 0.5  # how often the parent looks at the workers' sentinels while it waits
JOIN_S = 10.0  # how long close() waits for a worker to stop before terminating it


def visible_gpus() -> list[str]:
    """The GPU ids this process may hand out: its CUDA_VISIBLE_DEVICES list, else 0..n-1; [] without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return []
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [gpu.strip() for gpu in listed.split(",") if gpu.strip()]
    return [str(i) for i in range(torch.cuda.device_count())]


def _serve_replica(
    index: int, backend_name: str, options: dict, gpus: str | None, threads: int | None, conn: Connection
) -> None:
    """A worker: build the backend, then answer chunks until the stop sentinel (None) or EOF."""
    if gpus is not None:  # before anything here touches CUDA, which reads it once
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus
    multiprocessing.current_process().daemon = False  # so vLLM may start its engine core process
    parent = multiprocessing.parent_process()
    threading.Thread(target=_exit_with, args=(parent.sentinel,), daemon=True).start()
    try:
        if threads is not None:
            import torch

            torch.set_num_threads(threads)
        from scalingdown.teach.backend import get_backend

        backend = get_backend(backend_name).from_options(options)
    except Exception as exc:
        reason = f"replica {index} cannot build the {backend_name} backend: {exception_line(exc)}"
        conn.send(("failed", reason))
        return
    conn.send(("ready",))
    try:
        while (message := conn.recv()) is not None:
            chunk_id, requests, params = message
            error = None
            try:
                backend.generate(
                    requests, params, on_result=lambda r, c=chunk_id: conn.send(("result", c, r))
                )
            except Exception as exc:
                error = f"replica {index} failed: {exception_line(exc)}"
            conn.send(("done", chunk_id, error))
    except (EOFError, OSError):  # the parent is gone (its watcher thread ends this process anyway)
        pass
    finally:
        backend.close()


def _exit_with(parent_sentinel: int) -> None:
    """Exit this worker, and the processes it started, once the parent process is gone."""
    wait([parent_sentinel])
    for child in multiprocessing.active_children():
        child.kill()
    os._exit(1)


@dataclass
class _Replica:
    """The parent's view of one worker."""

    index: int
    process: Any = None  # multiprocessing.Process; None until started
    conn: Connection | None = None
    ready: bool = False
    chunk: int | None = None  # id of the chunk in flight
    failure: str | None = None  # why it is dead; None while it lives
    cannot_build: bool = False  # it failed to build its backend: not started again

    @property
    def alive(self) -> bool:
        return self.process is not None and self.failure is None


@dataclass
class _Chunk:
    """Consecutive requests sent together; `open` maps each request key to its unanswered positions."""

    requests: list[Request]
    open: dict[str, deque[int]] = field(default_factory=dict)

    def fail_open(self, error: str, finish: Finish) -> None:
        for position, key in sorted((i, key) for key, open in self.open.items() for i in open):
            finish(position, Result(key, error=error))
        self.open.clear()


class ReplicaPool:
    """`replicas` worker processes, each running its own copy of a registered backend."""

    def __init__(
        self, backend_name: str, options: BaseModel | dict, *, replicas: int, gpus_per_replica: int = 1
    ):
        if replicas < 1 or gpus_per_replica < 1:
            raise ValueError(f"replicas ({replicas}) and gpus_per_replica ({gpus_per_replica}) must be >= 1")
        self.backend_name = backend_name
        dumped = options.model_dump() if isinstance(options, BaseModel) else dict(options)
        self.options = {**dumped, "data_parallel_size": 1} if "data_parallel_size" in dumped else dumped
        self.replicas, self.gpus_per_replica = replicas, gpus_per_replica
        self._workers = [_Replica(i) for i in range(replicas)]
        self._slices: list[str | None] | None = None  # each replica's CUDA_VISIBLE_DEVICES; None: CPU
        self._shortage: str | None = None
        self._last_failure = "no replica is running"
        self._context = multiprocessing.get_context("spawn")
        self._next_chunk = 0

    @property
    def worker_pids(self) -> list[int]:
        """Process ids of the workers started and not known to be dead."""
        return [w.process.pid for w in self._workers if w.alive]

    def _start(self) -> None:
        """Start every worker not running, except those that could not build their backend."""
        if self._slices is None:  # once: cut the visible GPUs into one slice per replica
            gpus, g = visible_gpus(), self.gpus_per_replica
            self._slices = [",".join(gpus[i * g : (i + 1) * g]) or None for i in range(self.replicas)]
            if gpus and self.replicas * g > len(gpus):
                self._shortage = self._last_failure = (
                    f"data_parallel_size {self.replicas} x {g} GPUs per replica needs "
                    f"{self.replicas * g} GPUs, {len(gpus)} visible"
                )
        threads = max(1, (os.cpu_count() or 1) // self.replicas) if self._slices[0] is None else None
        for worker in self._workers:
            if self._shortage or worker.alive or worker.cannot_build:
                continue
            parent_end, child_end = self._context.Pipe()
            args = (worker.index, self.backend_name, self.options, self._slices[worker.index], threads)
            process = self._context.Process(
                target=_serve_replica, args=(*args, child_end), name=f"replica-{worker.index}", daemon=True
            )
            process.start()
            child_end.close()  # the parent keeps no copy, so it reads EOF when the worker dies
            self._workers[worker.index] = _Replica(worker.index, process, parent_end)

    def generate(
        self, requests: Sequence[Request], params: SamplingParams, *, on_result: OnResult | None = None
    ) -> list[Result]:
        """One `Result` per request, in order; `on_result` sees each as it arrives."""
        if not requests:
            return []
        results: list[Result | None] = [None] * len(requests)

        def finish(position: int, result: Result) -> None:
            results[position] = result
            if on_result is not None:
                on_result(result)

        try:
            self._start()
            self._run(requests, params, finish)
        except BaseException:
            self.close()  # workers may still be busy with this call's chunks: start afresh next time
            raise
        return list(results)  # type: ignore[arg-type]

    def _run(self, requests: Sequence[Request], params: SamplingParams, finish: Finish) -> None:
        size = max(1, math.ceil(len(requests) / (4 * self.replicas)))
        chunks: Chunks = {}
        for start in range(0, len(requests), size):
            chunk = _Chunk(list(requests[start : start + size]))
            for i in range(start, start + len(chunk.requests)):
                chunk.open.setdefault(requests[i].key, deque()).append(i)
            chunks[self._next_chunk] = chunk
            self._next_chunk += 1
        pending = deque(chunks)

        while chunks:
            for worker in self._workers:
                if worker.alive and worker.ready and worker.chunk is None and pending:
                    chunk_id = pending.popleft()
                    try:
                        worker.conn.send((chunk_id, chunks[chunk_id].requests, params))
                        worker.chunk = chunk_id
                    except OSError:  # it died since it last spoke: the chunk never reached it
                        pending.appendleft(chunk_id)
                        self._bury(worker, None, chunks, finish)
            living = [w for w in self._workers if w.alive]
            if not living:
                for chunk in chunks.values():
                    chunk.fail_open(self._last_failure, finish)
                return
            wait([w.conn for w in living] + [w.process.sentinel for w in living], timeout=POLL_S)
            for worker in living:
                reason, dead = None, False
                try:
                    while reason is None and worker.conn.poll():
                        reason = self._take(worker, worker.conn.recv(), chunks, finish)
                except (EOFError, OSError):  # its end of the pipe closed: it exited
                    dead = True
                if reason is not None or dead or not worker.process.is_alive():
                    self._bury(worker, reason, chunks, finish)

    def _take(self, worker: _Replica, message: tuple, chunks: Chunks, finish: Finish) -> str | None:
        """Act on one message from `worker`; returns the reason it gave up, if it did."""
        kind = message[0]
        if kind == "ready":
            worker.ready = True
        elif kind == "failed":
            worker.cannot_build = True
            return message[1]
        elif kind == "result":  # of a chunk not failed already (its worker was thought dead)
            chunk, result = chunks.get(message[1]), message[2]
            if chunk is not None and chunk.open.get(result.key):
                finish(chunk.open[result.key].popleft(), result)
        elif kind == "done":
            worker.chunk = None
            chunk = chunks.pop(message[1], None)
            if chunk is not None:
                chunk.fail_open(message[2] or f"replica {worker.index} returned no result", finish)
        return None

    def _bury(self, worker: _Replica, reason: str | None, chunks: Chunks, finish: Finish) -> None:
        """Mark `worker` dead; its chunk in flight fails with one line naming it and its exit code."""
        worker.process.join(timeout=1.0)
        if reason is None:
            reason = f"replica {worker.index} of {self.replicas} died (exit code {worker.process.exitcode})"
        worker.failure = self._last_failure = reason
        worker.conn.close()
        chunk, worker.chunk = chunks.pop(worker.chunk, None), None  # type: ignore[arg-type]
        if chunk is not None:
            chunk.fail_open(reason, finish)

    def close(self) -> None:
        """Stop every worker: the sentinel, a join with a timeout, then terminate. Idempotent."""
        started = [w for w in self._workers if w.process is not None]
        for worker in started:
            with contextlib.suppress(OSError):  # a dead worker's end is closed already
                worker.conn.send(None)
        for worker in started:
            # A worker busy with a chunk nobody waits for any more (on_result raised) is not waited for.
            worker.process.join(timeout=JOIN_S if worker.chunk is None else 0)
            for stop in (worker.process.terminate, worker.process.kill):
                if worker.process.is_alive():
                    stop()
                    worker.process.join(timeout=JOIN_S)
            worker.conn.close()
        # A replica that could not build its backend stays failed: the same options fail the same way.
        self._workers = [
            _Replica(w.index, failure=w.failure, cannot_build=True) if w.cannot_build else _Replica(w.index)
            for w in self._workers
        ]

"""Request batching for `scalingdown serve`: many requests, one model, few `generate_texts` calls.

The HTTP handlers `submit` (prompts, sampling settings) and wait on a future. One worker thread
owns the model. It takes the oldest waiting request and gathers the waiting requests with the same sampling
settings (`SamplingKey`) until `max_batch_size` prompts are collected or no such request has
joined for `batch_wait_ms` (and never longer than `MAX_WAIT_FACTOR` x `batch_wait_ms` in all), then
runs one `generate_texts` call for all of them. The window restarts at each arrival because clients
send in bursts spread over tens of milliseconds (32 connections opening, 32 answers parsed before
the next 32 requests go out): a fixed 5 ms window caught one request of such a burst and left the
batches alternating small and large; the benchmark measured 15% more throughput this way. Requests
with other settings keep their place in arrival order and form the next batches.

Why batching does not change answers: greedy decoding of a left-padded batch gives each row the same
tokens as decoding it alone (the attention mask hides the padding; on CPU in float32 the tests check
equality, while bf16 GPU kernels chosen by batch shape can flip a near-tie, as in any batching
server). Sampling draws from one seeded RNG stream per batch, so a seeded request is reproducible
when sent alone; unseeded sampling draws a fresh seed for every batch.

A request whose client has gone is `cancel`led: dropped from the queue if it waits, and if it runs
in a batch whose every request is cancelled, that batch ends at its next decoding step
(`generate_texts(should_stop=...)`), so a client that sends 100 prompts x n and leaves costs a step,
not minutes. A cancelled request in a batch shared with live ones rides along; its texts are dropped.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, replace

from scalingdown.evaluate.generation import DecodingSettings, GenerationStopped, generate_texts
from scalingdown.models.loading import LoadedModel

# A forming batch waits until no request has joined it for batch_wait_ms, but never longer than
# this many times batch_wait_ms in all.
MAX_WAIT_FACTOR = 10


class ServerStopping(RuntimeError):
    """The server stopped before this request was generated."""


@dataclass(frozen=True)
class SamplingKey:
    """The settings a batch shares; requests with equal keys may be generated together."""

    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    n: int = 1
    stop: tuple[str, ...] = ()
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def normalised(self) -> SamplingKey:
        """top_p and seed mean nothing to greedy decoding: drop them so more requests share a batch."""
        return replace(self, top_p=1.0, seed=None) if self.greedy else self


@dataclass
class BatchStats:
    """What the worker has done so far (a snapshot)."""

    batches_run: int = 0  # generate_texts calls
    requests_served: int = 0  # requests answered (failed ones not counted)
    prompts_served: int = 0  # a completions request may carry several prompts
    largest_batch: int = 0  # most requests in one batch
    requests_cancelled: int = 0  # requests whose client left before the answer (see `cancel`)
    batches_stopped: int = 0  # batches ended early because every request in them was cancelled


@dataclass
class _Pending:
    prompts: list[str]
    key: SamplingKey
    future: Future
    # Set under the lock by `cancel`; the worker reads it at every decoding step without the lock
    # (a bool read is atomic, and a stale False only costs one more step).
    cancelled: bool = False


class Batcher:
    """Queue plus one worker thread that owns `loaded`; `start()`, `submit(...)`, `stop()`."""

    def __init__(self, loaded: LoadedModel, *, max_batch_size: int = 32, batch_wait_ms: float = 5.0):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}")
        self.loaded = loaded
        self.max_batch_size = max_batch_size
        self.batch_wait_s = max(0.0, batch_wait_ms) / 1000.0
        self._cond = threading.Condition()
        self._waiting: list[_Pending] = []
        self._running: list[_Pending] = []  # the batch being generated
        self._stopping = False
        self._stats = BatchStats()
        self._seeds = random.Random()  # only for unseeded sampling
        self._thread = threading.Thread(target=self._run, name="scalingdown-serve-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    @property
    def busy(self) -> bool:
        """True while a batch is being generated."""
        with self._cond:
            return bool(self._running)

    def stats(self) -> BatchStats:
        with self._cond:
            return replace(self._stats)

    def submit(self, prompts: Sequence[str], key: SamplingKey) -> Future:
        """Queue `prompts` (one request); the future's result is one `Generation` per prompt.

        Each `Generation` holds `key.n` texts. Raises `ServerStopping` once `stop()` was called.
        """
        future: Future = Future()
        with self._cond:
            if self._stopping:
                raise ServerStopping("the server is shutting down")
            self._waiting.append(_Pending(list(prompts), key.normalised(), future))
            self._cond.notify_all()
        return future

    def cancel(self, future: Future) -> None:
        """Give up on the request behind `future` (its client left): it is never answered.

        Waiting, it leaves the queue; running, its batch stops at the next decoding step when every
        request in it is cancelled. Unknown or finished futures are ignored.
        """
        with self._cond:
            pending = next((p for p in self._waiting + self._running if p.future is future), None)
            if pending is None or pending.cancelled or future.done():
                return
            pending.cancelled = True
            self._waiting = [p for p in self._waiting if p is not pending]
            self._stats.requests_cancelled += 1
            future.cancel()

    def stop(self, timeout: float | None = None) -> None:
        """Fail every waiting request, let the running batch finish, and end the worker."""
        with self._cond:
            self._stopping = True
            waiting, self._waiting = self._waiting, []
            self._cond.notify_all()
        for pending in waiting:
            pending.future.set_exception(ServerStopping("the server is shutting down"))
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _prompts_with(self, key: SamplingKey) -> int:
        return sum(len(p.prompts) for p in self._waiting if p.key == key)

    def _next_batch(self) -> list[_Pending] | None:
        """Block until a batch is ready; None once stopping."""
        with self._cond:
            while not self._waiting and not self._stopping:
                self._cond.wait()
            if self._stopping:
                return None
            key = self._waiting[0].key
            started = time.monotonic()
            cap = started + MAX_WAIT_FACTOR * self.batch_wait_s
            gathered = self._prompts_with(key)
            deadline = started + self.batch_wait_s
            while not self._stopping and gathered < self.max_batch_size:
                remaining = min(deadline, cap) - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
                now_gathered = self._prompts_with(key)
                if now_gathered > gathered:  # a request joined: give the next one as long again
                    gathered, deadline = now_gathered, time.monotonic() + self.batch_wait_s
            if self._stopping:
                return None
            batch: list[_Pending] = []
            size = 0
            for pending in self._waiting:
                if pending.key != key:
                    continue
                # The oldest request always goes, even when it alone holds more prompts than a batch.
                if batch and size + len(pending.prompts) > self.max_batch_size:
                    break
                batch.append(pending)
                size += len(pending.prompts)
            taken = {id(p) for p in batch}
            self._waiting = [p for p in self._waiting if id(p) not in taken]
            self._running = batch
            return batch

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            try:
                self._run_batch(batch)
            finally:
                with self._cond:
                    self._running = []

    def _run_batch(self, batch: list[_Pending]) -> None:
        key = batch[0].key
        prompts = [prompt for pending in batch for prompt in pending.prompts]
        seed = key.seed if key.seed is not None else self._seeds.randrange(2**31)
        settings = DecodingSettings(
            max_new_tokens=key.max_tokens,
            stop=key.stop,
            temperature=key.temperature,
            top_p=key.top_p,
            # Greedy samples are all the same text: generate one and repeat it (transformers refuses
            # num_return_sequences > 1 without sampling anyway).
            num_samples=1 if key.greedy else key.n,
            batch_size=self.max_batch_size,
            seed=seed,
        )
        try:
            generations = generate_texts(
                self.loaded,
                prompts,
                settings,
                progress=False,
                should_stop=lambda: all(pending.cancelled for pending in batch),
            )
        except GenerationStopped:  # every client of this batch has gone; their futures are cancelled
            with self._cond:
                self._stats.batches_stopped += 1
            return
        except Exception as exc:  # a CUDA OOM or a model bug must fail these requests, not the worker
            with self._cond:
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(exc)
            return
        if key.greedy and key.n > 1:
            for generation in generations:
                generation.texts = generation.texts * key.n
                generation.new_tokens = generation.new_tokens * key.n
        # Under the lock, so `cancel` cannot slip in between the check and the answer; counted before
        # the answers go out, so a client that has its answer sees it counted.
        with self._cond:
            live = [pending for pending in batch if not pending.future.done()]
            self._stats.batches_run += 1
            self._stats.requests_served += len(live)
            self._stats.prompts_served += sum(len(pending.prompts) for pending in live)
            self._stats.largest_batch = max(self._stats.largest_batch, len(batch))
            start = 0
            for pending in batch:
                end = start + len(pending.prompts)
                if not pending.future.done():
                    pending.future.set_result(generations[start:end])
                start = end

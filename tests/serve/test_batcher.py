"""The batcher's cancellation, on the tiny model with no HTTP in between."""

from __future__ import annotations

import time

import pytest

from scalingdown.models.loading import load_model
from scalingdown.serve.batcher import Batcher, SamplingKey
from tests.serve.conftest import questions

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_cancelled_requests_leave_the_queue_and_stop_their_batch(model_dir):
    batcher = Batcher(load_model(str(model_dir), device="cpu"), max_batch_size=32, batch_wait_ms=0)
    batcher.start()
    try:
        long = batcher.submit(questions(64), SamplingKey(max_tokens=120, temperature=1.0, n=2))
        _wait_until(lambda: batcher.busy)  # the long request is being generated
        queued = batcher.submit(["Question: 1 + 1?"], SamplingKey(max_tokens=4))  # other settings: waits
        batcher.cancel(queued)
        assert queued.cancelled()
        started = time.monotonic()
        batcher.cancel(long)
        _wait_until(lambda: not batcher.busy)
        stopped_after = time.monotonic() - started
        after = batcher.stats()
        assert long.cancelled()
        assert (after.requests_cancelled, after.batches_stopped, after.batches_run) == (2, 1, 0)
        assert stopped_after < 1.0  # a decoding step, not the rest of 64 prompts x 2 x 120 tokens
        # The queue is empty and the worker serves the next request.
        assert batcher.submit(["Question: 2 + 2?"], SamplingKey(max_tokens=2)).result(timeout=10)
        assert batcher.stats().requests_served == 1
    finally:
        batcher.stop()

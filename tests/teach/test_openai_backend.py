"""The `openai` backend against a real HTTP server on 127.0.0.1 that injects faults (no mocked transport)."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import Counter

import pytest

from scalingdown.errors import UserError
from scalingdown.teach import Request, Result, SamplingParams, get_backend
from scalingdown.teach.openai_backend import OpenAIBackend, OpenAIOptions
from scalingdown.teach.ratelimit import TokenBucket
from tests.teach.fault_server import FaultConfig, FaultServer, logged_chat_prompt, rationale_for

KEY_ENV = "SCALINGDOWN_TEST_TEACHER_KEY"
KEY = "sk-test-4f9c2e7a1b-SECRET"
FAST = {"backoff_base_s": 0.01, "backoff_max_s": 0.1, "request_timeout_s": 2.0}


@pytest.fixture(autouse=True)
def _key_in_env(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)


def backend(*base_urls: str, **options) -> OpenAIBackend:
    opts = {"model": "teacher-7b", "base_urls": list(base_urls), "api_key_env": KEY_ENV, **FAST, **options}
    return OpenAIBackend(opts)


def prompts(count: int, tag: str = "q") -> list[Request]:
    return [
        Request(f"{tag}{i}", f"Question {i}: Ann has {i} apples and buys 3 more. How many?")
        for i in range(count)
    ]


def dead_port() -> int:
    """A port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_faults_every_prompt_answered_or_failed_once():
    faults = FaultConfig(
        p_429=0.10,
        p_500=0.10,
        p_timeout=0.05,
        p_malformed=0.05,
        stall_s=0.6,
        retry_after="0",
        retry_after_share=0.5,
    )
    requests = prompts(500)
    seen: list[Result] = []
    with FaultServer(api_key=KEY, faults=faults) as server:
        teacher = backend(server.base_url, request_timeout_s=0.3, max_retries=6)
        start = time.perf_counter()
        results = teacher.generate(requests, SamplingParams(), on_result=seen.append)
        wall = time.perf_counter() - start
        server.wait_quiet()  # a request the client gave up on may still reach a handler thread
        log = list(server.log)

    assert [r.key for r in results] == [r.key for r in requests]
    assert sorted(r.key for r in seen) == sorted(r.key for r in requests)  # each reported exactly once
    for request, result in zip(requests, results, strict=True):
        if result.ok:
            assert result.texts == [rationale_for(logged_chat_prompt(request.prompt))]
            assert result.completion_tokens > 0 and not result.from_cache
        else:
            assert result.error and not result.texts
    faults_seen = Counter(entry.fault for entry in log)
    assert all(faults_seen[name] > 0 for name in ("429", "500", "timeout", "malformed"))
    # The server saw at most every attempt (the first of each request plus its retries): on a loaded
    # machine a 0.3 s client timeout can expire before a request is even read, an attempt that
    # never reaches the log. It saw every request at least once, and retries beyond that.
    attempts = sum(1 + r.retries for r in results)
    assert len(requests) < len(log) <= attempts
    succeeded = sum(r.ok for r in results)
    assert succeeded >= 498  # a request fails only if 7 attempts in a row hit a 30% fault
    print(
        f"\nfaults: {succeeded} answered, {len(results) - succeeded} failed, {len(log)} requests sent "
        f"({dict(faults_seen)}), {wall:.2f} s"
    )


def test_exhausted_retries_are_recorded_with_their_reason():
    with FaultServer(api_key=KEY, faults=FaultConfig(p_500=0.6, seed=3)) as server:
        results = backend(server.base_url, max_retries=1).generate(prompts(60), SamplingParams())
        log = list(server.log)
    failed = [r for r in results if not r.ok]
    assert failed and len(failed) < len(results)
    for result in failed:
        assert (
            result.error
            == f"gave up after 2 attempts; last: 500 internal server error from {server.base_url}: "
            "The server had an error"
        )
        assert result.retries == 1
    assert Counter(e.prompt for e in log).most_common(1)[0][1] == 2  # never more than 1 + max_retries


@pytest.mark.parametrize("limit", [1, 4])
def test_concurrency_is_bounded(limit):
    with FaultServer(api_key=KEY, faults=FaultConfig(latency_s=0.03)) as server:
        results = backend(server.base_url, max_concurrency=limit).generate(prompts(24), SamplingParams())
        assert all(r.ok for r in results)
        assert server.max_in_flight == limit  # reached, never exceeded


def test_retry_after_is_honoured():
    # Backoff alone would retry at once (base 0); only the header can make the client wait.
    faults = FaultConfig(scripted=("429",), retry_after="1")
    with FaultServer(api_key=KEY, faults=faults) as server:
        results = backend(server.base_url, backoff_base_s=0.0).generate(prompts(3), SamplingParams())
        log = list(server.log)
    assert all(r.ok and r.retries == 1 for r in results)
    for prompt in {e.prompt for e in log}:
        first, second = sorted(e.started for e in log if e.prompt == prompt)
        assert second - first >= 0.95


def test_retry_after_zero_beats_a_long_backoff():
    faults = FaultConfig(scripted=("429", "429"), retry_after="0")
    with FaultServer(api_key=KEY, faults=faults) as server:
        start = time.perf_counter()
        results = backend(server.base_url, backoff_base_s=30.0, backoff_max_s=30.0).generate(
            prompts(4), SamplingParams()
        )
    assert all(r.ok and r.retries == 2 for r in results)
    assert time.perf_counter() - start < 2.0


def test_dead_endpoint_fails_over_to_the_live_one():
    dead = f"http://127.0.0.1:{dead_port()}/v1"
    with FaultServer(api_key=KEY) as server:
        start = time.perf_counter()
        results = backend(dead, server.base_url).generate(prompts(40), SamplingParams())
        elapsed = time.perf_counter() - start
        assert len(server.successes()) == 40
    assert all(r.ok for r in results)
    assert any(r.retries == 1 for r in results)  # some went to the dead port first
    assert elapsed < 3.0


def test_two_live_endpoints_share_the_load():
    with FaultServer(api_key=KEY) as one, FaultServer(api_key=KEY) as two:
        results = backend(one.base_url, two.base_url).generate(prompts(40), SamplingParams())
        assert all(r.ok for r in results)
        assert len(one.log) + len(two.log) == 40
        assert min(len(one.log), len(two.log)) >= 15


def slow_backoff(*base_urls: str, **options) -> OpenAIBackend:
    """Retrying would take seconds here, so a fast failure shows that nothing was retried."""
    return backend(*base_urls, backoff_base_s=2.0, backoff_max_s=2.0, **options)


def run_quickly(teacher: OpenAIBackend, count: int = 50) -> tuple[list[Result], float]:
    start = time.perf_counter()
    results = teacher.generate(prompts(count), SamplingParams())
    return results, time.perf_counter() - start


def test_wrong_key_fails_everything_at_once_with_one_reason(monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-wrong-key-0000")
    with FaultServer(api_key=KEY) as server:
        results, elapsed = run_quickly(slow_backoff(server.base_url, max_concurrency=4))
        sent = len(server.log)
    assert {r.error for r in results} == {
        f"401 unauthorized from {server.base_url}: check the key in ${KEY_ENV}"
    }
    assert sent <= 4 and elapsed < 2.0  # only the first wave was sent, none retried


def test_unknown_model_fails_with_one_reason():
    with FaultServer(api_key=KEY, model="other-model") as server:
        results, elapsed = run_quickly(slow_backoff(server.base_url, max_concurrency=4))
        sent = len(server.log)
    errors = {r.error for r in results}
    assert len(errors) == 1
    (error,) = errors
    assert error.startswith(f"404 not found from {server.base_url}: model 'teacher-7b' is not served there")
    assert sent <= 4 and elapsed < 2.0


def test_unreachable_endpoint_fails_with_one_reason():
    url = f"http://127.0.0.1:{dead_port()}/v1"
    results, elapsed = run_quickly(slow_backoff(url))
    errors = {r.error for r in results}
    assert len(errors) == 1 and next(iter(errors)).startswith(f"cannot connect to {url}")
    assert all(r.retries == 0 for r in results) and elapsed < 2.0


def test_all_endpoints_unusable_names_each_reason():
    dead = f"http://127.0.0.1:{dead_port()}/v1"
    with FaultServer(api_key="sk-another-key") as server:
        results, _ = run_quickly(slow_backoff(dead, server.base_url), count=10)
    (error,) = {r.error for r in results}
    assert error.startswith("every endpoint is unusable: ")
    assert f"cannot connect to {dead}" in error and f"401 unauthorized from {server.base_url}" in error


def test_empty_completion_is_an_error_and_not_retried():
    with FaultServer(api_key=KEY, faults=FaultConfig(empty_completion=True)) as server:
        results, elapsed = run_quickly(slow_backoff(server.base_url), count=8)
        assert len(server.log) == 8
    assert {r.error for r in results} == {"empty completion"}
    assert elapsed < 2.0


def test_n_samples_use_the_api_n_and_completions_api_works():
    with FaultServer(api_key=KEY) as server:
        chat = backend(server.base_url).generate(prompts(3), SamplingParams(n=3, temperature=0.7, seed=1))
        plain = backend(server.base_url, api="completions").generate(
            prompts(3), SamplingParams(stop=("\n\n",))
        )
        chat_messages = backend(server.base_url, api="completions").generate(
            [Request("m", [{"role": "user", "content": "hi"}])], SamplingParams()
        )
        assert [e.n for e in server.log] == [3, 3, 3, 1, 1, 1]  # one request per prompt, n sent in it
    for request, result in zip(prompts(3), chat, strict=True):
        assert result.texts == [rationale_for(logged_chat_prompt(request.prompt), i) for i in range(3)]
    for request, result in zip(prompts(3), plain, strict=True):
        assert result.texts == [rationale_for(request.prompt)]
    assert "completions API needs a text prompt" in chat_messages[0].error


def test_requests_per_minute_limit_spaces_requests():
    with FaultServer(api_key=KEY) as server:
        # 3000/min = 50/s with a one-second burst: 100 requests need about one second more.
        results, elapsed = run_quickly(backend(server.base_url, requests_per_minute=3000), count=100)
    assert all(r.ok for r in results)
    assert elapsed >= 0.9


def test_token_bucket_charges_estimates_and_settles_them():
    async def scenario() -> tuple[float, float]:
        bucket = TokenBucket(per_minute=600)  # 10 units/s, capacity 10
        start = time.perf_counter()
        await bucket.acquire(15)  # larger than the bucket: allowed when full, leaves a debt of 5
        await bucket.acquire(1)  # waits for the debt and one unit: ~0.6 s
        waited = time.perf_counter() - start
        bucket.adjust(-100)  # a refund never fills past capacity
        start = time.perf_counter()
        await bucket.acquire(10)
        return waited, time.perf_counter() - start

    waited, refunded = asyncio.run(scenario())
    assert 0.5 <= waited <= 1.2
    assert refunded < 0.1


def test_options_and_registry_errors_are_user_errors(monkeypatch):
    assert get_backend("openai") is OpenAIBackend
    with pytest.raises(UserError, match="unknown teacher backend 'nope'; known backends: .*'openai'"):
        get_backend("nope")
    with pytest.raises(UserError, match=r"teachers\[0\].options.temprature: Extra inputs are not permitted"):
        OpenAIBackend.from_options(
            {"model": "m", "base_urls": ["http://x/v1"], "temprature": 1}, where="teachers[0].options"
        )
    with pytest.raises(UserError, match="^options.base_urls: 'localhost:8000' is not an http"):
        OpenAIBackend({"model": "m", "base_urls": ["localhost:8000"]})
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(UserError, match=f"environment variable {KEY_ENV} is not set"):
        backend("http://127.0.0.1:1/v1")
    assert OpenAIOptions(model="m", base_urls="http://h/v1/").base_urls == ["http://h/v1"]


def test_the_key_appears_nowhere(tmp_path, caplog, monkeypatch):
    from scalingdown.teach.cache import CachedBackend, ResponseCache

    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    with FaultServer(api_key=KEY, faults=FaultConfig(p_500=0.3, p_malformed=0.1)) as server:
        teacher = backend(server.base_url)
        with ResponseCache(tmp_path / "cache.sqlite") as cache:
            results = CachedBackend(teacher, cache).generate(prompts(20), SamplingParams())
            texts += [
                repr(teacher),
                repr(teacher.options),
                repr(CachedBackend(teacher, cache)),
                repr(results),
            ]
        # A server that echoes the key it got (as OpenAI's 401 does) must not leak it into our errors.
        monkeypatch.setenv(KEY_ENV, KEY + "-revoked")
        failed = backend(server.base_url).generate(prompts(3), SamplingParams())
        texts += [repr(failed)] + [r.error or "" for r in failed]
    assert all(r.ok for r in results) and not any(r.ok for r in failed)
    assert (
        "HTTP Request" in caplog.text or "Sending HTTP Request" in caplog.text
    )  # client debug logs captured
    texts.append(caplog.text)
    for text in texts:
        assert KEY not in text
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert files
    for path in files:
        assert KEY.encode() not in path.read_bytes(), path

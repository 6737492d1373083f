"""The SQLite response cache and `CachedBackend`: keys, threads, processes, SIGKILL, and no resend."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from scalingdown.teach import Request, SamplingParams
from scalingdown.teach.cache import CachedBackend, CachedResponse, ResponseCache, cache_key
from scalingdown.teach.openai_backend import OpenAIBackend
from tests.teach.fault_server import FaultConfig, FaultServer, logged_chat_prompt, rationale_for

KEY_ENV = "SCALINGDOWN_TEST_CACHE_KEY"
KEY = "sk-cache-test-key"


@pytest.fixture(autouse=True)
def _key_in_env(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)


def teacher(url: str, **options) -> OpenAIBackend:
    return OpenAIBackend(
        {"model": "teacher-7b", "base_urls": [url], "api_key_env": KEY_ENV, "backoff_base_s": 0.01, **options}
    )


def prompts(count: int) -> list[Request]:
    return [Request(f"p{i}", f"Problem {i}: a train leaves at {i} o'clock. When?") for i in range(count)]


def test_get_put_hit_and_miss(tmp_path):
    with ResponseCache(tmp_path / "c.sqlite") as cache:
        assert cache.get("absent") is None and "absent" not in cache and len(cache) == 0
        cache.put("k", CachedResponse(["first", "second ü"], prompt_tokens=7, completion_tokens=11))
        hit = cache.get("k")
        assert hit is not None and hit.texts == ["first", "second ü"]
        assert (hit.prompt_tokens, hit.completion_tokens) == (7, 11) and hit.created > 0
        assert "k" in cache and len(cache) == 1 and cache.keys() == ["k"]
    with ResponseCache(tmp_path / "c.sqlite") as reopened:  # persisted
        assert reopened.get("k").texts == ["first", "second ü"]
        mode = reopened._connection().execute("PRAGMA journal_mode").fetchone()[0]
        assert mode == "wal"


def test_key_changes_with_every_input():
    params = SamplingParams()
    base = cache_key("openai", "m", "prompt", params)
    assert cache_key("openai", "m", "prompt", SamplingParams()) == base  # deterministic
    variants = {
        "backend": cache_key("hf", "m", "prompt", params),
        "model": cache_key("openai", "m2", "prompt", params),
        "prompt": cache_key("openai", "m", "prompt ", params),
        "chat": cache_key("openai", "m", [{"role": "user", "content": "prompt"}], params),
    }
    other = {"temperature": 0.7, "top_p": 0.9, "max_tokens": 100, "n": 4, "stop": ("\n",), "seed": 1}
    for spec in dataclasses.fields(SamplingParams):  # a new param that is left out of the key fails here
        variants[spec.name] = cache_key(
            "openai", "m", "prompt", dataclasses.replace(params, **{spec.name: other[spec.name]})
        )
    assert base not in variants.values()
    assert len(set(variants.values())) == len(variants)
    # A stop list from YAML is the same key as the tuple.
    assert cache_key("openai", "m", "p", SamplingParams(stop=["a"])) == cache_key(
        "openai", "m", "p", SamplingParams(stop=("a",))
    )


def test_many_threads_write_and_read(tmp_path):
    errors: list[BaseException] = []
    with ResponseCache(tmp_path / "c.sqlite") as cache:

        def work(thread: int) -> None:
            try:
                for i in range(100):
                    cache.put(f"{thread}-{i}", CachedResponse([f"text {thread} {i}"]))
                    assert cache.get(f"{thread}-{i}").texts == [f"text {thread} {i}"]
            except BaseException as exc:  # surfaced by the assert below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors and len(cache) == 800


WRITER = textwrap.dedent(
    """
    import sys
    from scalingdown.teach.cache import CachedResponse, ResponseCache
    cache = ResponseCache(sys.argv[1])
    i = 0
    while True:  # until killed
        row = CachedResponse([f"answer {i}" * 50, str(i)], prompt_tokens=i, completion_tokens=2 * i)
        cache.put(f"row{i}", row)
        i += 1
    """
)


def wait_for_rows(path, count: int, proc: subprocess.Popen, timeout_s: float = 20.0) -> int:
    deadline = time.monotonic() + timeout_s
    with ResponseCache(path) as reader:  # reading while another process writes: never blocked
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else "child died"
            if path.exists() and (rows := len(reader)) >= count:
                return rows
            time.sleep(0.02)
    raise AssertionError(f"the child wrote fewer than {count} rows in {timeout_s} s")


def test_survives_kill_9_mid_write(tmp_path):
    path = tmp_path / "c.sqlite"
    ResponseCache(path).close()
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stderr=subprocess.PIPE, text=True)
    try:
        wait_for_rows(path, 300, proc)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    with ResponseCache(path) as cache:
        assert cache._connection().execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        keys = cache.keys()
        assert len(keys) >= 300
        for key in keys:  # every stored row is whole
            i = int(key.removeprefix("row"))
            row = cache.get(key)
            assert row.texts == [f"answer {i}" * 50, str(i)] and (
                row.prompt_tokens,
                row.completion_tokens,
            ) == (i, 2 * i)
        cache.put("after", CachedResponse(["still writable"]))
        assert cache.get("after").texts == ["still writable"]


def test_cached_backend_sends_only_misses(tmp_path):
    params = SamplingParams(temperature=0.5, seed=7)
    with FaultServer(api_key=KEY) as server, ResponseCache(tmp_path / "c.sqlite") as cache:
        cached = CachedBackend(teacher(server.base_url), cache)
        first = cached.generate(prompts(10), params)
        assert len(server.log) == 10 and len(cache) == 10 and not any(r.from_cache for r in first)

        reported = []
        second = cached.generate(prompts(15), params, on_result=reported.append)
        assert len(server.log) == 15  # only the 5 new prompts went out
        sent_again = server.prompts_sent()[10:]
        assert sorted(sent_again) == sorted(logged_chat_prompt(r.prompt) for r in prompts(15)[10:])
        assert [r.from_cache for r in second] == [True] * 10 + [False] * 5
        assert [r.texts for r in second[:10]] == [r.texts for r in first]
        assert [r.key for r in second] == [r.key for r in prompts(15)]
        assert sorted(r.key for r in reported) == sorted(r.key for r in prompts(15))

        cached.generate(prompts(3), dataclasses.replace(params, temperature=0.6))  # another key: sent
        assert len(server.log) == 18


def test_failures_are_not_cached(tmp_path):
    with ResponseCache(tmp_path / "c.sqlite") as cache:
        with FaultServer(api_key=KEY, faults=FaultConfig(p_500=0.5, seed=1)) as flaky:
            first = CachedBackend(teacher(flaky.base_url, max_retries=0), cache).generate(
                prompts(30), SamplingParams()
            )
        failed = {r.key for r in first if not r.ok}
        assert failed and len(cache) == 30 - len(failed)
        with FaultServer(api_key=KEY) as healthy:
            second = CachedBackend(teacher(healthy.base_url), cache).generate(prompts(30), SamplingParams())
            assert len(healthy.log) == len(failed)  # exactly the failures are asked again
        assert all(r.ok for r in second)
        assert {r.key for r in second if not r.from_cache} == failed


CLIENT = textwrap.dedent(
    """
    import sys
    from scalingdown.teach import Request, SamplingParams
    from scalingdown.teach.cache import CachedBackend, ResponseCache
    from scalingdown.teach.openai_backend import OpenAIBackend
    url, path, count, key_env = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    options = {"model": "teacher-7b", "base_urls": [url], "api_key_env": key_env, "max_concurrency": 2}
    backend = OpenAIBackend(options)
    requests = [Request(f"p{i}", f"Problem {i}: a train leaves at {i} o'clock. When?") for i in range(count)]
    CachedBackend(backend, ResponseCache(path)).generate(requests, SamplingParams(seed=3))
    """
)


def test_rerun_after_kill_9_sends_nothing_stored(tmp_path):
    path, count = tmp_path / "c.sqlite", 120
    params = SamplingParams(seed=3)
    with FaultServer(api_key=KEY, faults=FaultConfig(latency_s=0.02)) as server:
        ResponseCache(path).close()
        proc = subprocess.Popen(
            [sys.executable, "-c", CLIENT, server.base_url, str(path), str(count), KEY_ENV],
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_for_rows(path, 30, proc)
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        with ResponseCache(path) as cache:
            stored = set(cache.keys())
            assert 30 <= len(stored) < count  # killed halfway
            sent_before = len(server.log)
            backend = teacher(server.base_url)
            results = CachedBackend(backend, cache).generate(prompts(count), params)
        resent = server.log[sent_before:]
    stored_prompts = {
        logged_chat_prompt(r.prompt)
        for r in prompts(count)
        if cache_key("openai", "teacher-7b", r.prompt, params) in stored
    }
    assert len(stored_prompts) == len(stored)
    assert not stored_prompts & {e.prompt for e in resent}
    assert len(resent) == count - len(stored)
    # The output equals an uninterrupted run: every answer is the server's answer for its prompt.
    assert all(r.ok for r in results)
    assert [r.texts for r in results] == [
        [rationale_for(logged_chat_prompt(r.prompt))] for r in prompts(count)
    ]


def test_a_crashing_caller_keeps_what_finished(tmp_path):
    reported: list[str] = []

    def crash_on_the_fifth(result) -> None:
        reported.append(result.key)
        if len(reported) == 5:
            raise RuntimeError("the caller crashed")

    with FaultServer(api_key=KEY, faults=FaultConfig(latency_s=0.01)) as server:
        with ResponseCache(tmp_path / "c.sqlite") as cache:
            cached = CachedBackend(teacher(server.base_url, max_concurrency=2), cache)
            with pytest.raises(RuntimeError, match="the caller crashed"):
                cached.generate(prompts(40), SamplingParams(), on_result=crash_on_the_fifth)
            assert len(reported) == 5  # nothing reported after the exception
            server.wait_quiet()  # requests the crashed call had written may still be arriving
            stored = len(cache)
            assert 5 <= stored < 40  # each answer is stored before the caller sees it
            sent_before = len(server.log)
            results = cached.generate(prompts(40), SamplingParams())
            assert len(server.log) - sent_before == 40 - stored
            assert all(r.ok for r in results)

"""What `scalingdown serve` refuses or drops so that one client cannot stall the others.

The issue behind these tests: a 15 MiB prompt held the tokenizer lock for 36 s and blocked every
other request, and 100 prompts x n 128 kept the model busy after their client had gone. Each test
runs a real server on 127.0.0.1 and measures with the clock: a small request must be answered
within SMALL_REQUEST_S while the abuse goes on.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time

import openai
import pytest

from scalingdown.serve import start_server
from tests.serve.conftest import questions

NAME = "tiny-student"
# A small greedy request takes a few ms on this tiny model; this bound leaves room for a busy CI box.
SMALL_REQUEST_S = 2.0

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def server(model_dir):
    """A server with the default limits."""
    with start_server(str(model_dir), port=0, model_name=NAME) as running:
        yield running


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url, api_key="none", max_retries=0, timeout=120)


def _post(port: int, path: str, body: bytes, timeout: float = 120) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def _small_request_seconds(client: openai.OpenAI) -> float:
    started = time.monotonic()
    response = client.completions.create(model=NAME, prompt="Question: 2 + 3?", max_tokens=2, temperature=0)
    assert response.choices[0].text is not None
    return time.monotonic() - started


def test_a_huge_prompt_is_refused_at_once_and_blocks_no_one(server, client):
    huge = json.dumps({"model": NAME, "prompt": "word " * (3 * 2**20), "max_tokens": 4}).encode()  # 15 MiB
    result: dict = {}

    def send_huge() -> None:
        started = time.monotonic()
        result["status"], result["payload"] = _post(server.port, "/v1/completions", huge)
        result["seconds"] = time.monotonic() - started

    sender = threading.Thread(target=send_huge)
    sender.start()
    time.sleep(0.5)  # the body is sent by now; the old server tokenised it under its one lock
    small_seconds = _small_request_seconds(client)
    sender.join(timeout=300)
    print(
        f"small request while a 15 MiB prompt was in flight: {small_seconds:.3f} s; "
        f"the 15 MiB prompt answered {result['status']} after {result['seconds']:.3f} s"
    )
    assert small_seconds < SMALL_REQUEST_S
    assert result["status"] == 400 and result["seconds"] < 5
    assert set(result["payload"]["error"]) == {"message", "type", "param", "code"}


def test_a_prompt_too_long_by_its_characters_is_refused_before_tokenising(server, client):
    # Under the body limit, but 2 MB of characters cannot make 256 tokens of this tokenizer or less.
    started = time.monotonic()
    with pytest.raises(openai.BadRequestError) as refused:
        client.completions.create(model=NAME, prompt="x" * 2_000_000, max_tokens=4)
    assert time.monotonic() - started < SMALL_REQUEST_S
    assert refused.value.code == "context_length_exceeded"
    assert "characters" in refused.value.message
    with pytest.raises(openai.BadRequestError) as chat:
        client.chat.completions.create(
            model=NAME, messages=[{"role": "user", "content": "y" * 2_000_000}], max_tokens=4
        )
    assert chat.value.code == "context_length_exceeded"


def test_tokenising_a_long_text_does_not_hold_up_other_requests(model_dir):
    from transformers import AutoTokenizer

    from scalingdown.serve.tokens import TokenizerPool

    pool = TokenizerPool(AutoTokenizer.from_pretrained(model_dir), workers=2)
    try:
        slow = pool.submit(pool.count, ["word " * 400_000])  # 2 MB: a second or more of tokenising
        started = time.monotonic()
        assert pool.submit(pool.count, ["word word", ""]).result()[1] == 0
        quick = time.monotonic() - started
        assert not slow.done(), "the long text was tokenised too fast to show anything"
        assert slow.result()[0] > 400_000
    finally:
        pool.close()
    assert quick < 0.5


@pytest.fixture(scope="module")
def capped_server(model_dir):
    with start_server(
        str(model_dir), port=0, model_name=NAME, max_sequences=8, max_tokens=32, max_body_mb=0.01
    ) as running:
        yield running


@pytest.fixture(scope="module")
def capped(capped_server):
    return openai.OpenAI(base_url=capped_server.url, api_key="none", max_retries=0, timeout=60)


def test_a_body_over_the_limit_is_refused_however_it_is_sent(capped_server):
    body = json.dumps({"model": NAME, "prompt": "x" * 20_000}).encode()  # over 0.01 MiB
    status, payload = _post(capped_server.port, "/v1/completions", body)
    assert status == 400 and payload["error"]["code"] == "request_too_large"
    assert "--max-body-mb" in payload["error"]["message"]
    conn = http.client.HTTPConnection("127.0.0.1", capped_server.port, timeout=30)
    try:  # chunked: no Content-Length up front, so the limit is counted as the body arrives
        chunks = (body[i : i + 4096] for i in range(0, len(body), 4096))
        conn.request("POST", "/v1/completions", body=chunks, encode_chunked=True)
        response = conn.getresponse()
        assert response.status == 400
        assert json.loads(response.read())["error"]["code"] == "request_too_large"
    finally:
        conn.close()


def test_prompts_times_n_and_max_tokens_are_capped(capped):
    prompts = questions(3)
    with pytest.raises(openai.BadRequestError, match="9 sequences") as too_many:
        capped.completions.create(model=NAME, prompt=prompts, n=3, max_tokens=2, temperature=0)
    assert too_many.value.param == "n" and "--max-sequences" in too_many.value.message
    with pytest.raises(openai.BadRequestError, match="--max-sequences"):
        capped.completions.create(model=NAME, prompt=prompts[0], n=9, max_tokens=2, temperature=0)
    with pytest.raises(openai.BadRequestError, match="--max-tokens") as too_long:
        capped.completions.create(model=NAME, prompt=prompts[0], max_tokens=33)
    assert too_long.value.param == "max_tokens"
    with pytest.raises(openai.BadRequestError) as chat:
        capped.chat.completions.create(
            model=NAME, messages=[{"role": "user", "content": "hi"}], max_completion_tokens=33
        )
    assert chat.value.param == "max_completion_tokens"
    # At the caps: answered. A chat with no max_tokens gets the cap, not OpenAI's open-ended default.
    at_cap = capped.completions.create(model=NAME, prompt=prompts[:2], n=4, max_tokens=32, temperature=0)
    assert len(at_cap.choices) == 8
    reply = capped.chat.completions.create(model=NAME, messages=[{"role": "user", "content": "hi"}])
    assert reply.usage.completion_tokens <= 32


def test_the_work_of_a_client_that_left_is_dropped(server, client):
    """128 prompts x n=2 (the default cap), sampled: seconds of work, abandoned after 1 s."""
    body = json.dumps(
        {"model": NAME, "prompt": questions(128), "n": 2, "max_tokens": 120, "temperature": 1.0}
    ).encode()
    before = server.stats()
    with socket.create_connection(("127.0.0.1", server.port)) as conn:
        conn.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        conn.settimeout(1.0)  # the batch is running by now; an early answer would be a refusal
        try:
            early = conn.recv(4096)
        except TimeoutError:
            early = None
        assert early is None, f"answered before the client left: {early[:300]!r}"
    small_seconds = _small_request_seconds(client)
    print(f"small request right after a client left 128 prompts x n=2: {small_seconds:.3f} s")
    assert small_seconds < SMALL_REQUEST_S
    after = server.stats()
    assert after.requests_cancelled - before.requests_cancelled == 1
    assert after.batches_stopped - before.batches_stopped == 1  # ended mid-batch, at a decoding step
    assert after.prompts_served - before.prompts_served == 1  # the small request only
    # The worker is idle: nothing of the abandoned request runs on after the small one.
    time.sleep(0.3)
    assert server.stats().batches_run == after.batches_run

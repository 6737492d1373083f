"""`scalingdown serve` over real HTTP on 127.0.0.1, called by the official `openai` client.

The model is the tiny Llama of `conftest.model_dir` (perturbed weights, so each prompt gets its own
varied greedy continuation).
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from scalingdown.errors import UserError
from scalingdown.evaluate.generation import truncate_at_stop
from scalingdown.serve import start_server
from scalingdown.serve.server import is_loopback
from scalingdown.serve.tokens import render_chat
from tests.serve.conftest import questions

KEY = "sk-serve-test"
NAME = "tiny-student"


@pytest.fixture(scope="module")
def server(model_dir):
    with start_server(str(model_dir), port=0, api_key=KEY, model_name=NAME, batch_wait_ms=20) as running:
        yield running


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url, api_key=KEY, max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


def _greedy(client, prompt: str, max_tokens: int = 24, model: str = NAME, **extra) -> openai.types.Completion:
    return client.completions.create(
        model=model, prompt=prompt, max_tokens=max_tokens, temperature=0, **extra
    )


def _raw(server, method: str, path: str, body: bytes | None = None, key: str | None = KEY):
    host, port = "127.0.0.1", server.port
    conn = http.client.HTTPConnection(host, port, timeout=30)
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    payload = json.loads(response.read())
    conn.close()
    return response.status, payload


def test_models_list_and_lookup(client, model_dir):
    assert [m.id for m in client.models.list().data] == [NAME]
    assert client.models.retrieve(NAME).id == NAME
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")
    # The path the server was started with names the model too.
    assert _greedy(client, "x", 2).model == NAME
    assert client.completions.create(model=str(model_dir), prompt="x", max_tokens=2, temperature=0).choices


def test_completions_n_usage_and_length(client, tokenizer):
    prompts = questions(2)
    response = client.completions.create(model=NAME, prompt=prompts, max_tokens=6, temperature=0, n=3)
    assert response.object == "text_completion"
    assert [c.index for c in response.choices] == list(range(6))
    texts = [c.text for c in response.choices]
    assert texts[0] == texts[1] == texts[2] and texts[3] == texts[4] == texts[5]  # greedy: n equal copies
    assert texts[0] != texts[3]  # each prompt has its own choices, in order
    assert texts[0] == _greedy(client, prompts[0], 6).choices[0].text
    assert all(c.finish_reason == "length" for c in response.choices)
    expected_prompt = sum(len(tokenizer(p)["input_ids"]) for p in prompts)
    assert response.usage.prompt_tokens == expected_prompt
    assert response.usage.completion_tokens == 6 * 6
    assert response.usage.total_tokens == expected_prompt + 36


def test_stop_string_ends_the_text(client):
    prompt = questions(3)[2]
    full = _greedy(client, prompt, 40).choices[0].text
    # A plain-ASCII piece from the middle of what the model writes anyway.
    start = next(
        i for i in range(8, len(full) - 3) if full[i : i + 3].isascii() and full[i : i + 3].isalnum()
    )
    stop = full[start : start + 3]
    response = _greedy(client, prompt, 40, stop=[stop, "never-written"])
    choice = response.choices[0]
    assert choice.text == truncate_at_stop(full, [stop])
    assert choice.finish_reason == "stop"
    assert response.usage.completion_tokens < 40


def test_chat_without_a_template_uses_role_lines(client):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2 + 3?"}]
    chat = client.chat.completions.create(model=NAME, messages=messages, max_tokens=12, temperature=0)
    assert chat.object == "chat.completion"
    assert chat.choices[0].message.role == "assistant"
    plain = _greedy(client, "system: Be brief.\nuser: What is 2 + 3?\nassistant:", 12)
    assert chat.choices[0].message.content == plain.choices[0].text
    assert chat.usage.prompt_tokens == plain.usage.prompt_tokens


def test_render_chat_uses_the_tokenizer_template(tokenizer):
    tokenizer.chat_template = (
        "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    try:
        text = render_chat(tokenizer, [{"role": "user", "content": "hi"}])
    finally:
        tokenizer.chat_template = None
    # This tokenizer adds no BOS itself, so the template's BOS stays.
    assert text == "<s><|user|>hi\n<|assistant|>"


def test_seeded_sampling_is_reproducible(client):
    def sample(seed: int) -> list[str]:
        response = client.completions.create(
            model=NAME, prompt="Question: how many?", max_tokens=12, temperature=1.0, n=2, seed=seed
        )
        return [c.text for c in response.choices]

    first = sample(11)
    assert sample(11) == first
    assert sample(12) != first
    assert first[0] != first[1]  # n samples are drawn, not copied


def test_errors_have_the_openai_shape_and_status(server, client):
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.url, api_key="wrong", max_retries=0).models.list()
    status, payload = _raw(server, "GET", "/v1/models", key=None)
    assert status == 401 and payload["error"]["code"] == "invalid_api_key"

    with pytest.raises(openai.NotFoundError, match="no-such-model"):
        client.completions.create(model="no-such-model", prompt="x", max_tokens=2)
    assert _raw(server, "GET", "/v1/nothing")[0] == 404

    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.completions.create(model=NAME, prompt="x", max_tokens=2, temperature=5)
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.completions.create(model=NAME, prompt="x", max_tokens=0)
    with pytest.raises(openai.BadRequestError, match="messages"):
        client.chat.completions.create(model=NAME, messages=[], max_tokens=2)
    with pytest.raises(openai.BadRequestError, match="stream"):
        client.completions.create(model=NAME, prompt="x", max_tokens=2, stream=True)
    with pytest.raises(openai.BadRequestError) as too_long:
        client.completions.create(model=NAME, prompt="word " * 300, max_tokens=10)
    assert too_long.value.code == "context_length_exceeded"

    status, payload = _raw(server, "POST", "/v1/completions", body=b"{not json")
    assert status == 400
    assert set(payload["error"]) == {"message", "type", "param", "code"}
    assert "JSON" in payload["error"]["message"]
    assert _raw(server, "GET", "/health", key=None) == (200, {"status": "ok"})


def test_validation_errors_are_openai_400s_naming_the_field(server):
    def post(body) -> tuple[int, dict]:
        return _raw(server, "POST", "/v1/completions", body=json.dumps(body).encode())

    cases = {
        "prompt": {"model": NAME, "prompt": 5},
        "max_tokens": {"model": NAME, "prompt": "x", "max_tokens": "ten"},
        "n": {"model": NAME, "prompt": "x", "n": True},  # strict: true is not 1
        "model": {"prompt": "x"},
        "stop": {"model": NAME, "prompt": "x", "stop": ["s"] * 17},
    }
    for field, body in cases.items():
        status, payload = post(body)
        assert status == 400, (field, payload)
        assert payload["error"]["param"] == field and payload["error"]["message"].startswith(field)
    status, payload = post({"model": NAME, "prompt": [1, 2, 3]})
    assert status == 400 and "token-id prompts are not supported" in payload["error"]["message"]
    status, payload = _raw(
        server,
        "POST",
        "/v1/chat/completions",
        json.dumps({"model": NAME, "messages": [{"content": "hi"}]}).encode(),
    )
    assert status == 400 and payload["error"]["message"].startswith("messages[0].role")
    assert post([1])[0] == 400
    status, payload = _raw(server, "GET", "/v1/completions")
    assert status == 405 and payload["error"]["code"] == "method_not_allowed"
    # The key is checked before the body is even parsed.
    assert _raw(server, "POST", "/v1/completions", body=b"{not json", key="wrong")[0] == 401


def test_the_openapi_document_describes_the_api(server):
    status, document = _raw(server, "GET", "/openapi.json", key=None)
    assert status == 200
    assert {"/v1/models", "/v1/models/{name}", "/v1/completions", "/v1/chat/completions"} <= set(
        document["paths"]
    )
    completion = document["components"]["schemas"]["CompletionRequest"]
    assert set(completion["required"]) == {"model", "prompt"}
    assert "HTTPBearer" in document["components"]["securitySchemes"]


def test_concurrent_requests_are_batched_and_greedy_matches_alone(server, client):
    prompts = questions(16)  # different lengths: batched rows are left-padded
    alone = [_greedy(client, p, 16).choices[0].text for p in prompts]
    before = server.stats()
    barrier = threading.Barrier(len(prompts))

    def send(prompt: str) -> str:
        barrier.wait()
        return _greedy(client, prompt, 16).choices[0].text

    with ThreadPoolExecutor(len(prompts)) as pool:
        together = list(pool.map(send, prompts))
    after = server.stats()
    assert together == alone
    served = after.requests_served - before.requests_served
    assert served == len(prompts)
    assert after.batches_run - before.batches_run < served
    assert after.largest_batch > 1


def test_requests_with_different_settings_are_not_mixed(server, client):
    prompts = questions(8)
    lengths = [5 if i % 2 else 9 for i in range(len(prompts))]
    alone = [_greedy(client, p, n).choices[0].text for p, n in zip(prompts, lengths, strict=True)]
    barrier = threading.Barrier(len(prompts))

    def send(i: int):
        barrier.wait()
        return _greedy(client, prompts[i], lengths[i])

    with ThreadPoolExecutor(len(prompts)) as pool:
        responses = list(pool.map(send, range(len(prompts))))
    assert [r.choices[0].text for r in responses] == alone
    assert [r.usage.completion_tokens for r in responses] == lengths


def test_stop_releases_the_port_and_threads(model_dir):
    running = start_server(str(model_dir), port=0)
    port = running.port
    client = openai.OpenAI(base_url=running.url, api_key="unused", max_retries=0)
    assert _greedy(client, "x", 3, model="model").choices[0].text  # leaves a keep-alive connection open
    started = time.monotonic()
    running.stop()
    assert time.monotonic() - started < 5
    assert not running.alive
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2)
    with socket.socket() as probe:  # free again, for a server (which sets SO_REUSEADDR, as all do)
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))


def test_bad_options_are_user_errors(model_dir):
    with pytest.raises(UserError, match="max_batch_size"):
        start_server(str(model_dir), port=0, max_batch_size=0)
    with pytest.raises(UserError, match="max_sequences"):
        start_server(str(model_dir), port=0, max_sequences=0)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(UserError, match="--port"):
            start_server(str(model_dir), port=taken.getsockname()[1])
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("")


def test_serve_stops_cleanly_on_sigterm(model_dir):
    code = (
        "import sys\nfrom scalingdown.serve import serve\n"
        f"serve({str(model_dir)!r}, port=0, ready=lambda port: print(port, flush=True))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        port = int(process.stdout.readline())
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
        assert _greedy(client, "x", 3, model="model").choices[0].text
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert "server stopped" in process.stderr.read()
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))

"""Fuzzing `scalingdown serve` from its own OpenAPI document with schemathesis (opt in: -m slow).

Schemathesis reads /openapi.json and generates what it describes (positive cases) and what it
rules out (negative cases: wrong types, missing fields, values out of range); each case goes to a
real server on 127.0.0.1 serving the tiny model. The key and the served model's name are given
as a client would know them (the path's `name`, and the bodies' `model` through schemathesis's
`parameters` config), so the cases reach the checks behind the model lookup. Every answer must
be a 200 or a 400 in OpenAI's error shape, and the server must still answer /health afterwards.
"""

from __future__ import annotations

import http.client
import json

import hypothesis
import pytest

from scalingdown.serve import start_server

schemathesis = pytest.importorskip("schemathesis")

KEY = "sk-fuzz"
AUTH = {"Authorization": f"Bearer {KEY}"}
NAME = "tiny-student"
EXAMPLES = 40  # per operation and mode: some 300 requests in all

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


@pytest.fixture(scope="module")
def fuzzed_server(model_dir):
    with start_server(str(model_dir), port=0, api_key=KEY, model_name=NAME) as running:
        yield running


@pytest.fixture(scope="module")
def api_schema(fuzzed_server):
    config = schemathesis.Config.from_dict({"parameters": {"body.model": NAME}})
    return schemathesis.openapi.from_url(f"http://127.0.0.1:{fuzzed_server.port}/openapi.json", config=config)


def _check_answers(operation, mode) -> None:
    """EXAMPLES cases of `mode` for `operation`, each sent to the server and its answer checked."""
    fixed = {"path_parameters": {"name": NAME}} if len(operation.path_parameters) else {}
    strategy = operation.as_strategy(generation_mode=mode, headers=AUTH, **fixed)

    @hypothesis.settings(
        max_examples=EXAMPLES,
        deadline=None,  # a case that generates tokens takes a while on a busy CPU
        database=None,
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    @hypothesis.given(case=strategy)
    def check(case) -> None:
        response = case.call(headers=AUTH, timeout=60)
        sent = f"{mode.value}: {case.method} {case.formatted_path} {case.body!r:.300}"
        assert response.status_code in (200, 400), f"{sent} -> {response.status_code} {response.text[:300]}"
        if response.status_code == 400:
            assert set(response.json()["error"]) == {"message", "type", "param", "code"}, sent

    check()


def test_every_answer_is_a_200_or_a_400(api_schema):
    # schemathesis's own pytest plugin (`schema.parametrize`) does not run under pytest 9 (it sets
    # `node._nodeid`), so the cases come from its documented strategies, driven by hypothesis here.
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/completions", "/v1/chat/completions", "/v1/models"}
    for operation in operations:
        _check_answers(operation, schemathesis.GenerationMode.POSITIVE)
        if len(operation.body):  # the others take nothing a client could get wrong but the name
            _check_answers(operation, schemathesis.GenerationMode.NEGATIVE)


def test_the_server_is_still_up_after_fuzzing(fuzzed_server):
    conn = http.client.HTTPConnection("127.0.0.1", fuzzed_server.port, timeout=10)
    try:
        conn.request("GET", "/health")
        response = conn.getresponse()
        assert (response.status, json.loads(response.read())) == (200, {"status": "ok"})
    finally:
        conn.close()
    assert fuzzed_server.alive

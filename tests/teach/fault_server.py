"""A real OpenAI-compatible HTTP server on 127.0.0.1 that misbehaves on purpose.

`FaultServer` runs the stdlib `ThreadingHTTPServer` in a thread on a free port and speaks enough of
the OpenAI API for the teach stage: `POST /v1/chat/completions`, `POST /v1/completions` and
`GET /v1/models`. Answers are deterministic (a rationale derived from the prompt's hash). It checks
the bearer key, knows one model name, logs every request, counts requests in flight, and injects
faults (429 with or without `Retry-After`, 500, a stall past the client's timeout, a malformed
body) with seeded probabilities. A fault is drawn from a hash of (seed, prompt, how often that
prompt was seen), so the same test sees the same faults whatever order requests arrive in.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default 5 drops connection attempts of a 16-way concurrent client


@dataclass
class LoggedRequest:
    """One request as the server saw it."""

    path: str
    prompt: str  # the prompt text, or the chat messages as canonical JSON
    started: float  # time.monotonic() when the body was read
    status: int = 0
    fault: str = ""  # "", "429", "500", "timeout", "malformed", "empty", "auth", "model"
    n: int = 1


@dataclass
class FaultConfig:
    """Share of requests answered with each fault; the rest succeed."""

    p_429: float = 0.0
    p_500: float = 0.0
    p_timeout: float = 0.0
    p_malformed: float = 0.0
    retry_after: str | None = None  # the Retry-After header of a 429; None sends none
    retry_after_share: float = 1.0  # share of 429s that carry the header
    stall_s: float = 2.0  # how long a "timeout" fault sleeps before answering
    latency_s: float = 0.0  # added to every request, to make requests overlap
    empty_completion: bool = False  # answer with "" (a model that says nothing)
    scripted: tuple[str, ...] = ()  # faults of each prompt's 1st, 2nd, ... attempt, before any draw
    seed: int = 0


def logged_chat_prompt(text: str) -> str:
    """How the log records a chat request whose one user message is `text`."""
    return json.dumps([{"role": "user", "content": text}], sort_keys=True)


def rationale_for(prompt: str, index: int = 0) -> str:
    """The deterministic answer the server gives for a prompt (sample `index` when n > 1)."""
    digest = hashlib.sha256(f"{index}:{prompt}".encode()).hexdigest()
    return f"Step 1: read the problem ({digest[:8]}). Step 2: compute. The answer is {int(digest[8:12], 16)}."


@dataclass
class FaultServer:
    """Context manager: `with FaultServer(model=..., api_key=...) as srv: srv.base_url`."""

    model: str = "teacher-7b"
    api_key: str | None = "sk-test-key"
    faults: FaultConfig = field(default_factory=FaultConfig)
    log: list[LoggedRequest] = field(default_factory=list)
    max_in_flight: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._in_flight = 0
        self._seen: dict[str, int] = {}
        self._httpd: _Server | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    def __enter__(self) -> FaultServer:
        server = self

        class Handler(_Handler):
            owner = server

        self._httpd = _Server(("127.0.0.1", 0), Handler)
        threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._httpd is not None
        self._httpd.shutdown()
        self._httpd.server_close()

    @property
    def port(self) -> int:
        assert self._httpd is not None
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # -- queries for assertions --------------------------------------------------------------------
    def prompts_sent(self) -> list[str]:
        return [entry.prompt for entry in self.log if entry.path.endswith("completions")]

    def successes(self) -> list[LoggedRequest]:
        return [entry for entry in self.log if entry.status == 200 and not entry.fault]

    def wait_quiet(self, quiet_s: float = 0.3, timeout_s: float = 10.0) -> None:
        """Return once no request has been in flight or arrived for `quiet_s` (stragglers of a client
        that stopped mid-run: a request it had written may reach a handler thread a moment later)."""
        deadline = time.monotonic() + timeout_s
        seen, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            with self._lock:
                state = (len(self.log), self._in_flight)
            if state[0] != seen or state[1]:
                seen, since = state[0], time.monotonic()
            elif time.monotonic() - since >= quiet_s:
                return
            time.sleep(0.02)
        raise TimeoutError(f"the server was still busy after {timeout_s} s")

    # -- internals used by the handler ------------------------------------------------------------
    def _draw_fault(self, prompt: str) -> str:
        """Pick this request's fault from a hash of (seed, prompt, times seen)."""
        with self._lock:
            seen = self._seen.get(prompt, 0)
            self._seen[prompt] = seen + 1
        if seen < len(self.faults.scripted):
            return self.faults.scripted[seen]
        digest = hashlib.sha256(f"{self.faults.seed}:{seen}:{prompt}".encode()).digest()
        u = int.from_bytes(digest[:8], "big") / 2**64
        f = self.faults
        for name, share in (
            ("429", f.p_429),
            ("500", f.p_500),
            ("timeout", f.p_timeout),
            ("malformed", f.p_malformed),
        ):
            if u < share:
                return name
            u -= share
        return ""

    def _enter(self, entry: LoggedRequest) -> None:
        with self._lock:
            self.log.append(entry)
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1


class _Handler(BaseHTTPRequestHandler):
    owner: FaultServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes; do not wait 40 ms for an ACK

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass

    def _send(self, status: int, body: bytes | dict, headers: dict[str, str] | None = None) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)
        except OSError:  # the client gave up (timeout) and closed the socket
            self.close_connection = True

    def _authorized(self) -> bool:
        expected = self.owner.api_key
        if expected is None:
            return True
        given = self.headers.get("Authorization", "")
        if given == f"Bearer {expected}":
            return True
        # Like the real API, the message repeats the key it got: the client must scrub it.
        shown = given.removeprefix("Bearer ")
        self._send(
            401,
            {"error": {"message": f"Incorrect API key provided: {shown}", "type": "invalid_request_error"}},
        )
        return False

    def do_GET(self) -> None:
        if not self._authorized():
            return
        if self.path.rstrip("/") == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": self.owner.model, "object": "model"}]})
        else:
            self._send(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        payload = json.loads(self.rfile.read(length) or b"{}")
        chat = self.path == "/v1/chat/completions"
        if chat:
            prompt = json.dumps(payload.get("messages"), sort_keys=True)
        else:
            prompt = payload.get("prompt", "")
        n = int(payload.get("n") or 1)
        entry = LoggedRequest(path=self.path, prompt=prompt, started=time.monotonic(), n=n)
        owner = self.owner
        owner._enter(entry)
        try:
            self._answer(entry, payload, chat)
        finally:
            owner._leave()

    def _answer(self, entry: LoggedRequest, payload: dict, chat: bool) -> None:
        owner, faults = self.owner, self.owner.faults
        if self.path not in ("/v1/chat/completions", "/v1/completions"):
            entry.status, entry.fault = 404, "route"
            self._send(404, {"error": {"message": f"no route {self.path}"}})
            return
        if not self._authorized():
            entry.status, entry.fault = 401, "auth"
            return
        if payload.get("model") != owner.model:
            entry.status, entry.fault = 404, "model"
            message = f"The model `{payload.get('model')}` does not exist."
            self._send(
                404,
                {"error": {"message": message, "type": "invalid_request_error", "code": "model_not_found"}},
            )
            return
        if faults.latency_s:
            time.sleep(faults.latency_s)
        entry.fault = owner._draw_fault(entry.prompt)
        if entry.fault == "429":
            headers = {}
            share_draw = int(hashlib.sha256(entry.prompt.encode()).hexdigest()[:8], 16) / 2**32
            if faults.retry_after is not None and share_draw < faults.retry_after_share:
                headers["Retry-After"] = faults.retry_after
            entry.status = 429
            self._send(429, {"error": {"message": "Rate limit reached", "type": "requests"}}, headers)
        elif entry.fault == "500":
            entry.status = 500
            self._send(500, {"error": {"message": "The server had an error", "type": "server_error"}})
        elif entry.fault == "timeout":
            time.sleep(faults.stall_s)
            entry.status = 200
            self._send(200, self._completion(payload, chat, entry))
        elif entry.fault == "empty":  # a paid answer with nothing in it (usage counted, text "")
            entry.status = 200
            self._send(200, self._completion(payload, chat, entry, empty=True))
        elif entry.fault == "malformed":
            entry.status = 200
            self._send(200, b'{"id": "cmpl-1", "choices": [{"index": 0, "mess')
        else:
            entry.status = 200
            self._send(200, self._completion(payload, chat, entry))

    def _completion(self, payload: dict, chat: bool, entry: LoggedRequest, empty: bool = False) -> dict:
        texts = [
            "" if empty or self.owner.faults.empty_completion else rationale_for(entry.prompt, i)
            for i in range(entry.n)
        ]
        if chat:
            choices = [
                {"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"}
                for i, t in enumerate(texts)
            ]
        else:
            choices = [
                {"index": i, "text": t, "finish_reason": "stop", "logprobs": None}
                for i, t in enumerate(texts)
            ]
        prompt_tokens = len(entry.prompt.split())
        completion_tokens = sum(len(t.split()) for t in texts)
        return {
            "id": "cmpl-" + hashlib.sha256(entry.prompt.encode()).hexdigest()[:12],
            "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()),
            "model": self.owner.model,
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

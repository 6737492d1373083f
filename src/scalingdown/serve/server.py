"""The HTTP layer of `scalingdown serve`: an OpenAI-compatible API for one local Hugging Face model.

Endpoints: `GET /v1/models`, `GET /v1/models/{name}`, `POST /v1/completions`,
`POST /v1/chat/completions`, and `GET /health` (no key needed). Bodies and errors follow OpenAI's
JSON shapes, so the official client (and the teach stage's `openai` backend) talks to it unchanged.
Each HTTP connection gets a thread from the stdlib `ThreadingHTTPServer`; the threads only parse,
check and wait, while one worker thread owns the model and batches what they submit
(`scalingdown.serve.batcher`). Streaming, logprobs and echo are refused with a 400 naming the field.

Safety: the server listens on loopback unless the caller names another host, and then says so on
stderr; with `api_key` set every `/v1` request must carry it as a bearer token.
"""

from __future__ import annotations

import copy
import errno
import hmac
import ipaddress
import json
import signal
import socket
import socketserver
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from scalingdown.errors import UserError
from scalingdown.evaluate.generation import context_limit
from scalingdown.models.loading import LoadedModel, load_model
from scalingdown.serve.batcher import Batcher, BatchStats, ServerStopping
from scalingdown.serve.protocol import (
    MAX_BODY_BYTES,
    APIError,
    completion_response,
    parse_chat,
    parse_completion,
)

IDLE_CONNECTION_TIMEOUT_S = 120  # a keep-alive connection with no new request is closed after this


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # the default 5 drops connection attempts of a 32-way concurrent client
    app: _App

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn, a reverse DNS lookup that can stall offline.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def get_request(self):
        conn, address = super().get_request()
        with self.app.connections_lock:
            self.app.connections.add(conn)
        return conn, address

    def shutdown_request(self, request) -> None:
        with self.app.connections_lock:
            self.app.connections.discard(request)
        super().shutdown_request(request)


class _HTTPServerV6(_HTTPServer):
    address_family = socket.AF_INET6


class _App:
    """Everything a request needs: the model's names, the batcher, a tokenizer for counting."""

    def __init__(self, loaded: LoadedModel, batcher: Batcher, model_name: str, aliases: set[str], api_key):
        self.loaded, self.batcher, self.model_name = loaded, batcher, model_name
        self.aliases = aliases | {model_name}
        self._api_key = api_key.encode() if api_key else None
        # HTTP threads count tokens on their own copy: the worker's tokenizer changes its truncation
        # state while generating, and a Rust tokenizer used from two threads at once raises.
        self._tokenizer = copy.deepcopy(loaded.tokenizer)
        self._tokenizer_lock = threading.Lock()
        self.context_limit = context_limit(loaded)
        self.created = int(time.time())
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()

    def count_tokens(self, text: str) -> int:
        with self._tokenizer_lock:
            return len(self._tokenizer(text)["input_ids"])

    def render_chat(self, messages: list[dict]) -> str:
        with self._tokenizer_lock:
            return render_chat(self._tokenizer, messages)

    def check_auth(self, header: str | None) -> None:
        if self._api_key is None:
            return
        scheme, _, token = (header or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise APIError(
                401, "missing API key: send it as 'Authorization: Bearer KEY'", code="invalid_api_key"
            )
        if not hmac.compare_digest(token.strip().encode(), self._api_key):
            raise APIError(401, "incorrect API key", code="invalid_api_key")

    def model_card(self) -> dict:
        return {"id": self.model_name, "object": "model", "created": self.created, "owned_by": "scalingdown"}

    def handle(self, method: str, path: str, auth: str | None, body: bytes | None) -> tuple[int, dict]:
        path = path.split("?", 1)[0].rstrip("/")
        if path == "/health":
            return 200, {"status": "ok"}
        routes = {"/v1/models": "GET", "/v1/completions": "POST", "/v1/chat/completions": "POST"}
        model_path = path.startswith("/v1/models/")
        if path not in routes and not model_path:
            raise APIError(404, f"no such endpoint: {path or '/'}", code="not_found")
        self.check_auth(auth)
        expected = "GET" if model_path else routes[path]
        if method != expected:
            raise APIError(405, f"{path} takes {expected}, not {method}", code="method_not_allowed")
        if path == "/v1/models":
            return 200, {"object": "list", "data": [self.model_card()]}
        if model_path:
            name = urllib.parse.unquote(path.removeprefix("/v1/models/"))
            if name not in self.aliases:
                raise APIError(404, f"the model {name!r} does not exist", code="model_not_found")
            return 200, self.model_card()
        try:
            request = json.loads(body or b"")
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise APIError(400, f"the body is not valid JSON ({exc})") from None
        if not isinstance(request, dict):
            raise APIError(400, "the body must be a JSON object")
        model = request.get("model")
        if not isinstance(model, str) or not model:
            raise APIError(400, "model: required (a string)", param="model")
        if model not in self.aliases:
            raise APIError(
                404,
                f"the model {model!r} does not exist; this server has {self.model_name!r}",
                param="model",
                code="model_not_found",
            )
        chat = path == "/v1/chat/completions"
        parsed = parse_chat(request, self) if chat else parse_completion(request, self)
        try:
            generations = self.batcher.submit(parsed.prompts, parsed.key).result()
        except ServerStopping:
            raise APIError(503, "the server is shutting down", kind="server_error") from None
        except Exception as exc:
            message = (
                f"generation failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            )
            raise APIError(500, message, kind="server_error") from None
        return 200, completion_response(self.model_name, parsed.key, generations, chat=chat)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a busy client does not reconnect for every request
    # Headers and body go out in two writes; with Nagle's algorithm the second waits for the
    # client's delayed ACK, which adds 40 ms to every response on Linux.
    disable_nagle_algorithm = True
    timeout = IDLE_CONNECTION_TIMEOUT_S
    server: _HTTPServer

    def do_GET(self) -> None:  # noqa: N802 - the name http.server dispatches to
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self.close_connection = True
            raise APIError(411, "chunked bodies are not supported; send Content-Length")
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            self.close_connection = True
            raise APIError(400, "Content-Length is not a number") from None
        if length > MAX_BODY_BYTES:
            self.close_connection = True  # the body is left unread, so the connection cannot go on
            raise APIError(413, f"the body is {length} bytes; the limit is {MAX_BODY_BYTES}")
        return self.rfile.read(length) if length > 0 else b""

    def _dispatch(self, method: str) -> None:
        try:
            body = self._read_body() if method in ("POST", "PUT") else None
            status, payload = self.server.app.handle(
                method, self.path, self.headers.get("Authorization"), body
            )
        except APIError as exc:
            status, payload = exc.status, exc.payload()
        except Exception as exc:  # a bug here must still answer, not drop the connection
            status = 500
            payload = APIError(
                500, f"internal error: {type(exc).__name__}: {exc}", kind="server_error"
            ).payload()
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)
        except (ConnectionError, TimeoutError):
            self.close_connection = True  # the client went away; nothing to tell it

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        pass  # no access log: a teach run sends thousands of requests


def render_chat(tokenizer, messages: list[dict]) -> str:
    """The prompt for chat `messages`: the tokenizer's chat template, else "role: content" lines.

    The fallback ends with "assistant:" so the model writes the assistant's turn. A template that
    writes the BOS token itself loses it here when the tokenizer adds BOS anyway, so the prompt
    does not start with two.
    """
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        bos = tokenizer.bos_token
        if bos and text.startswith(bos):
            ids = tokenizer("x")["input_ids"]
            if ids and ids[0] == tokenizer.bos_token_id:
                text = text[len(bos) :]
        return text
    lines = [f"{m['role']}: {m['content']}" for m in messages]
    return "\n".join([*lines, "assistant:"])


def is_loopback(host: str) -> bool:
    """True when `host` names only loopback addresses ('' and '0.0.0.0' mean every interface)."""
    if host == "localhost":
        return True
    if not host.strip("[]"):
        return False
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise UserError(f"host: cannot resolve {host!r}") from None
    return all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


def _default_model_name(model_path: str) -> str:
    path = Path(model_path).expanduser()
    return path.resolve().name if path.exists() else model_path


def _bind(host: str, port: int) -> _HTTPServer:
    bare = host.strip("[]")
    try:
        infos = socket.getaddrinfo(bare or "0.0.0.0", port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise UserError(f"host: cannot resolve {host!r}") from None
    families = {info[0] for info in infos}
    server_class = _HTTPServer if socket.AF_INET in families else _HTTPServerV6
    try:
        return server_class((bare, port), _Handler)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise UserError(f"port: {port} on {host} is already in use; pick another with --port") from None
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise UserError(f"port: not allowed to listen on {port} (ports below 1024 need root)") from None
        raise UserError(f"host: cannot listen on {host}:{port} ({exc.strerror or exc})") from None


class RunningServer:
    """A server running in background threads: `.url`, `.port`, `.stats()`, `.stop()`; a context manager."""

    def __init__(self, httpd: _HTTPServer, app: _App, host: str):
        self._httpd, self._app = httpd, app
        self.port: int = httpd.server_port
        bare = host.strip("[]")
        if bare in ("", "0.0.0.0"):
            bare = "127.0.0.1"
        elif bare == "::":
            bare = "::1"
        self.url = f"http://{f'[{bare}]' if ':' in bare else bare}:{self.port}/v1"
        self.model_name = app.model_name
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="scalingdown-serve-http",
            daemon=True,
        )
        self._stopped = False
        app.batcher.start()
        self._thread.start()

    def stats(self) -> BatchStats:
        return self._app.batcher.stats()

    @property
    def alive(self) -> bool:
        """True while the HTTP thread or the model's worker still runs."""
        return self._thread.is_alive() or self._app.batcher.running

    @property
    def batches_run(self) -> int:
        return self.stats().batches_run

    @property
    def requests_served(self) -> int:
        return self.stats().requests_served

    def stop(self) -> None:
        """Stop accepting, fail queued requests with 503, finish the running batch, release the port."""
        if self._stopped:
            return
        self._stopped = True
        self._httpd.shutdown()  # serve_forever returns; no new connection is accepted
        self._httpd.server_close()  # the listening socket closes: the port is free
        self._app.batcher.stop()
        # Idle keep-alive connections would keep their threads blocked in recv: end their reading
        # side (a response being written still goes out).
        with self._app.connections_lock:
            connections = list(self._app.connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RD)
            except OSError:
                pass
        self._thread.join()

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


def start_server(
    model_path: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    device: str = "auto",
    dtype: str = "auto",
    max_batch_size: int = 32,
    batch_wait_ms: float = 5.0,
    model_name: str | None = None,
    api_key: str | None = None,
    ready: Callable[[int], None] | None = None,
) -> RunningServer:
    """Load the model and serve it in background threads; returns once it accepts requests.

    `port=0` picks a free port (see `.port`). A host other than loopback is served as asked, with
    a warning on stderr. `ready(port)` is called once the server is up.
    """
    if max_batch_size < 1:
        raise UserError(f"max_batch_size: must be at least 1, got {max_batch_size}")
    if batch_wait_ms < 0:
        raise UserError(f"batch_wait_ms: must be >= 0, got {batch_wait_ms}")
    if not 0 <= port <= 65535:
        raise UserError(f"port: {port} is not a port number (0-65535)")
    if not is_loopback(host):
        keyless = "" if api_key else " and no API key is required"
        print(
            f"warning: listening on {host or 'every interface'}, not loopback: other machines can reach "
            f"this server{keyless}",
            file=sys.stderr,
        )
    if host == "localhost":
        host = "127.0.0.1"  # one address, so the URL given out is the one listened on
    # Bind first: a port in use is found before minutes are spent loading a large model.
    httpd = _bind(host, port)
    try:
        loaded = load_model(model_path, device=device, dtype=dtype)
        name = model_name or _default_model_name(model_path)
        aliases = {model_path, str(Path(model_path).expanduser().resolve())}
        batcher = Batcher(loaded, max_batch_size=max_batch_size, batch_wait_ms=batch_wait_ms)
        httpd.app = _App(loaded, batcher, name, aliases, api_key)
    except BaseException:
        httpd.server_close()
        raise
    running = RunningServer(httpd, httpd.app, host)
    if ready is not None:
        ready(running.port)
    return running


def serve(
    model_path: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    device: str = "auto",
    dtype: str = "auto",
    max_batch_size: int = 32,
    batch_wait_ms: float = 5.0,
    model_name: str | None = None,
    api_key: str | None = None,
    ready: Callable[[int], None] | None = None,
) -> None:
    """Serve until Ctrl-C or SIGTERM, then stop cleanly (see `start_server` for the arguments)."""
    running = start_server(
        model_path,
        host=host,
        port=port,
        device=device,
        dtype=dtype,
        max_batch_size=max_batch_size,
        batch_wait_ms=batch_wait_ms,
        model_name=model_name,
        api_key=api_key,
        ready=ready,
    )
    print(
        f"serving {model_path} as model {running.model_name!r} at {running.url} "
        f"(batches of up to {max_batch_size}; Ctrl-C stops)",
        file=sys.stderr,
        flush=True,
    )
    stop = threading.Event()
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):  # a timed wait, so Ctrl-C is seen promptly
            pass
    except KeyboardInterrupt:
        pass
    finally:
        running.stop()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        print("server stopped", file=sys.stderr, flush=True)

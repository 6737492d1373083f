"""Running `scalingdown serve`: bind, load the model, and serve its API (`app`) with uvicorn.

uvicorn's event loop runs in a background thread (so `start_server` returns a handle that tests and
benchmarks drive in-process), the model's worker in another (`batcher`), and token counting on a
small pool (`tokens`). `serve` is the foreground command: it waits for Ctrl-C or SIGTERM and stops
cleanly: no new connections, queued requests answered 503, the running batch finished, the port
released.

Safety: the server listens on loopback unless the caller names another host, and then says so on
stderr; with `api_key` set every `/v1` request must carry it as a bearer token.
"""

from __future__ import annotations

import errno
import ipaddress
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from scalingdown.errors import UserError
from scalingdown.models.loading import load_model
from scalingdown.serve.batcher import Batcher, BatchStats
from scalingdown.serve.limits import ServeLimits

IDLE_CONNECTION_TIMEOUT_S = 120  # a keep-alive connection with no new request is closed after this
# The default 5 drops connection attempts of a 32-way concurrent client (uvicorn asks for 2048 anyway).
LISTEN_BACKLOG = 256
# At stop: how long answers already being written may take before their connections are cut.
SHUTDOWN_GRACE_S = 10
STARTUP_TIMEOUT_S = 30


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


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port, or a `UserError` that says why not."""
    bare = host.strip("[]")
    try:
        infos = socket.getaddrinfo(bare or "0.0.0.0", port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise UserError(f"host: cannot resolve {host!r}") from None
    family = socket.AF_INET if socket.AF_INET in {info[0] for info in infos} else socket.AF_INET6
    # proto named: asyncio sets TCP_NODELAY only on sockets whose proto is IPPROTO_TCP, and without
    # it the body of a response waits for the client's delayed ACK (40 ms a response on Linux).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as every server does
        sock.bind((bare, port))
        sock.listen(LISTEN_BACKLOG)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise UserError(f"port: {port} on {host} is already in use; pick another with --port") from None
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise UserError(f"port: not allowed to listen on {port} (ports below 1024 need root)") from None
        raise UserError(f"host: cannot listen on {host}:{port} ({exc.strerror or exc})") from None
    return sock


class RunningServer:
    """A server running in background threads: `.url`, `.port`, `.stats()`, `.stop()`; a context manager."""

    def __init__(self, sock: socket.socket, app, batcher: Batcher, pool, model_name: str, host: str):
        import uvicorn

        self._batcher, self._pool = batcher, pool
        self.port: int = sock.getsockname()[1]
        bare = host.strip("[]")
        if bare in ("", "0.0.0.0"):
            bare = "127.0.0.1"
        elif bare == "::":
            bare = "::1"
        self.url = f"http://{f'[{bare}]' if ':' in bare else bare}:{self.port}/v1"
        self.model_name = model_name
        config = uvicorn.Config(
            app,
            lifespan="off",
            log_config=None,  # leave the caller's logging alone
            log_level="warning",
            access_log=False,  # a teach run sends thousands of requests
            proxy_headers=False,
            server_header=False,
            backlog=LISTEN_BACKLOG,
            timeout_keep_alive=IDLE_CONNECTION_TIMEOUT_S,
            timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="scalingdown-serve-http", daemon=True
        )
        self._stopped = False
        batcher.start()
        self._thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the HTTP server did not start (see the log above)")
            time.sleep(0.01)

    def stats(self) -> BatchStats:
        return self._batcher.stats()

    @property
    def alive(self) -> bool:
        """True while the HTTP thread or the model's worker still runs."""
        return self._thread.is_alive() or self._batcher.running

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
        self._server.should_exit = True  # uvicorn closes the socket and idle connections, then waits
        self._batcher.stop()  # queued requests fail (answered 503); the running batch finishes
        self._thread.join(SHUTDOWN_GRACE_S + 5)
        self._pool.close()

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
    max_sequences: int = ServeLimits().max_sequences,
    max_tokens: int = ServeLimits().max_tokens,
    max_body_mb: float = ServeLimits().max_body_mb,
    ready: Callable[[int], None] | None = None,
) -> RunningServer:
    """Load the model and serve it in background threads; returns once it accepts requests.

    `port=0` picks a free port (see `.port`). A host other than loopback is served as asked, with
    a warning on stderr. `max_sequences`, `max_tokens` and `max_body_mb` bound one request (see
    `ServeLimits`). `ready(port)` is called once the server is up.
    """
    from pydantic import ValidationError

    from scalingdown.serve.app import Service, build_app
    from scalingdown.serve.tokens import TokenizerPool

    if max_batch_size < 1:
        raise UserError(f"max_batch_size: must be at least 1, got {max_batch_size}")
    if batch_wait_ms < 0:
        raise UserError(f"batch_wait_ms: must be >= 0, got {batch_wait_ms}")
    if not 0 <= port <= 65535:
        raise UserError(f"port: {port} is not a port number (0-65535)")
    try:
        limits = ServeLimits(max_sequences=max_sequences, max_tokens=max_tokens, max_body_mb=max_body_mb)
    except ValidationError as exc:
        error = exc.errors()[0]
        raise UserError(f"{error['loc'][0]}: {error['msg']}, got {error['input']!r}") from None
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
    sock = _bind(host, port)
    try:
        loaded = load_model(model_path, device=device, dtype=dtype)
        name = model_name or _default_model_name(model_path)
        aliases = {model_path, str(Path(model_path).expanduser().resolve())}
        # The pool copies the tokenizer before the worker starts changing its truncation settings.
        pool = TokenizerPool(loaded.tokenizer)
        batcher = Batcher(loaded, max_batch_size=max_batch_size, batch_wait_ms=batch_wait_ms)
        app = build_app(Service(loaded, batcher, pool, name, aliases, limits), api_key=api_key)
    except BaseException:
        sock.close()
        raise
    running = RunningServer(sock, app, batcher, pool, name, host)
    if ready is not None:
        ready(running.port)
    return running


def serve(model_path: str, *, ready: Callable[[int], None] | None = None, **options) -> None:
    """Serve until Ctrl-C or SIGTERM, then stop cleanly (`options`: those of `start_server`)."""
    running = start_server(model_path, ready=ready, **options)
    print(
        f"serving {model_path} as model {running.model_name!r} at {running.url} "
        f"(batches of up to {options.get('max_batch_size', 32)}; OpenAPI document at "
        f"{running.url.removesuffix('/v1')}/openapi.json; Ctrl-C stops)",
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

"""The HTTP API of `scalingdown serve`: a FastAPI app in front of the batcher.

Endpoints: `GET /v1/models`, `GET /v1/models/{name}`, `POST /v1/completions`,
`POST /v1/chat/completions`, `GET /health`, and the OpenAPI document at `/openapi.json` (the last
two need no key). Bodies and errors follow OpenAI's JSON shapes, so the official client and the
teach stage's `openai` backend talk to it unchanged; every error, FastAPI's own 404, 405 and
validation errors included, is answered as {"error": {"message", "type", "param", "code"}}.

A request goes through, in order:
1. `Gate` (plain ASGI, before FastAPI): the bearer key, then the body read with a byte limit, so
   a wrong key or a 15 MiB body costs nothing more.
2. the pydantic model of its body, then `check_before_tokenising` (caps, unsupported fields) and
   `check_characters` on the event loop: cheap.
3. chat rendering and token counting on the `TokenizerPool`'s threads: a long count holds up no
   other request.
4. the batcher; while it waits, the handler checks every `DISCONNECT_POLL_S` whether its client is
   still there, and cancels the work of one that left.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from scalingdown.evaluate.generation import Generation, context_limit
from scalingdown.models.loading import LoadedModel
from scalingdown.serve.batcher import Batcher, SamplingKey, ServerStopping
from scalingdown.serve.limits import ServeLimits
from scalingdown.serve.protocol import (
    APIError,
    ChatRequest,
    CompletionRequest,
    ErrorResponse,
    ModelContext,
    check_before_tokenising,
    check_characters,
    completion_response,
    sampling_key,
    validation_error,
)
from scalingdown.serve.tokens import TokenizerPool

DISCONNECT_POLL_S = 0.1  # how soon the work of a client that left is cancelled


class _ClientGone(Exception):
    """The client closed its connection before its answer was ready."""


class Service:
    """What the routes need: the model's names and context, the batcher, the tokenizer pool, the limits."""

    def __init__(
        self,
        loaded: LoadedModel,
        batcher: Batcher,
        pool: TokenizerPool,
        model_name: str,
        aliases: set[str],
        limits: ServeLimits,
    ):
        self.batcher, self.pool, self.model_name, self.limits = batcher, pool, model_name, limits
        self.aliases = aliases | {model_name}
        self.context = ModelContext(context_limit(loaded), loaded.is_seq2seq, pool.chars_per_token)
        self.created = int(time.time())

    def model_card(self) -> dict:
        return {"id": self.model_name, "object": "model", "created": self.created, "owned_by": "scalingdown"}

    def check_model(self, name: str) -> None:
        if name not in self.aliases:
            raise APIError(
                404,
                f"the model {name!r} does not exist; this server has {self.model_name!r}",
                param="model",
                code="model_not_found",
            )

    async def _in_pool(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.wrap_future(self.pool.submit(fn, *args))

    async def complete(self, request: Request, body: CompletionRequest | ChatRequest) -> dict:
        """Check, count, queue and wait: the one path of both completion endpoints."""
        chat = isinstance(body, ChatRequest)
        self.check_model(body.model)
        checked = check_before_tokenising(body, self.limits)
        if chat:
            messages = [{"role": m.role, "content": m.text()} for m in body.messages]
            try:
                prompts = [await self._in_pool(self.pool.render, messages)]
            except Exception as exc:  # the template's own checks (e.g. roles must alternate) raise
                raise APIError(
                    400, f"messages: the chat template refused them ({exc})", param="messages"
                ) from None
        else:
            prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        check_characters(prompts, checked, self.context)
        counts = await self._in_pool(self.pool.count, prompts)
        key = sampling_key(body, counts, checked, self.context)
        generations = await self._generate(request, prompts, key)
        return completion_response(self.model_name, key, generations, chat=chat)

    async def _generate(self, request: Request, prompts: list[str], key: SamplingKey) -> list[Generation]:
        if await request.is_disconnected():
            raise _ClientGone
        try:
            future: Future = self.batcher.submit(prompts, key)
        except ServerStopping:
            raise APIError(503, "the server is shutting down", kind="server_error") from None
        waiter = asyncio.wrap_future(future)
        try:
            while not (await asyncio.wait({waiter}, timeout=DISCONNECT_POLL_S))[0]:
                if await request.is_disconnected():
                    raise _ClientGone
            return waiter.result()
        except ServerStopping:
            raise APIError(503, "the server is shutting down", kind="server_error") from None
        except (APIError, _ClientGone):
            raise
        except Exception as exc:
            line = str(exc).splitlines()[0] if str(exc) else ""
            raise APIError(
                500, f"generation failed: {type(exc).__name__}: {line}", kind="server_error"
            ) from None
        finally:
            if not future.done():  # the client left, or this handler was cancelled at shutdown
                self.batcher.cancel(future)


class Gate:
    """Plain ASGI in front of the app: the API key for /v1, then the body, read up to a byte limit.

    The body is read here and handed on whole (FastAPI would read it anyway); later `receive`
    calls go to the server, so the app still learns of a disconnect.
    """

    def __init__(self, app: Callable[..., Awaitable[None]], *, api_key: str | None, max_body_bytes: int):
        self.app, self.max_body_bytes = app, max_body_bytes
        self._key = api_key.encode() if api_key else None

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        try:
            if scope["path"].startswith("/v1"):
                self._check_key(headers.get(b"authorization", b"").decode("latin-1"))
            body = await self._read_body(headers.get(b"content-length"), receive)
        except APIError as exc:
            # Not "Connection: close": the server reads and drops the rest of an unread body, and
            # the client, still sending, would otherwise lose the answer to a connection reset.
            await _send_json(send, exc.status, exc.payload())
            return
        except _ClientGone:
            return
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    def _check_key(self, header: str) -> None:
        if self._key is None:
            return
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise APIError(
                401, "missing API key: send it as 'Authorization: Bearer KEY'", code="invalid_api_key"
            )
        if not hmac.compare_digest(token.strip().encode(), self._key):
            raise APIError(401, "incorrect API key", code="invalid_api_key")

    async def _read_body(self, declared: bytes | None, receive: Callable) -> bytes:
        limit = self.max_body_bytes
        too_big = "the body is {} bytes; this server takes at most {} (serve --max-body-mb)"
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise APIError(400, too_big.format(int(declared), limit), code="request_too_large")
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:  # a chunked body states no length up front
                raise APIError(400, too_big.format(f"over {limit}", limit), code="request_too_large")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


async def _send_json(send: Callable, status: int, payload: dict) -> None:
    response = JSONResponse(payload, status_code=status)
    await send({"type": "http.response.start", "status": status, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})


_ERRORS = {status: {"model": ErrorResponse} for status in (400, 401, 404)}


def build_app(service: Service, *, api_key: str | None) -> Gate:
    """The ASGI app: the `Gate` around FastAPI's routes for `service`."""
    app = FastAPI(
        title="scalingdown serve",
        description="An OpenAI-compatible API (completions and chat) for one local model.",
        version="1",
        redoc_url=None,
    )
    # Only for the OpenAPI document (clients see the bearer scheme); `Gate` checks the key.
    documented = [Depends(HTTPBearer(auto_error=False))] if api_key else []

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/v1/models", dependencies=documented, responses=_ERRORS)
    async def list_models() -> dict:
        return {"object": "list", "data": [service.model_card()]}

    @app.get("/v1/models/{name:path}", dependencies=documented, responses=_ERRORS)
    async def get_model(name: str) -> dict:
        service.check_model(name)
        return service.model_card()

    @app.post("/v1/completions", dependencies=documented, responses=_ERRORS)
    async def completions(body: CompletionRequest, request: Request) -> dict:
        return await service.complete(request, body)

    @app.post("/v1/chat/completions", dependencies=documented, responses=_ERRORS)
    async def chat_completions(body: ChatRequest, request: Request) -> dict:
        return await service.complete(request, body)

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(exc.payload(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        error = validation_error(exc.errors())
        return JSONResponse(error.payload(), status_code=error.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        path = request.url.path
        if exc.status_code == 404:
            error = APIError(404, f"no such endpoint: {path}", code="not_found")
        elif exc.status_code == 405:
            error = APIError(405, f"{path} does not take {request.method}", code="method_not_allowed")
        else:
            error = APIError(exc.status_code, str(exc.detail))
        return JSONResponse(error.payload(), status_code=error.status, headers=exc.headers)

    @app.exception_handler(_ClientGone)
    async def gone(request: Request, exc: _ClientGone) -> JSONResponse:
        # Nobody reads this; 499 is nginx's "client closed request".
        return JSONResponse(APIError(499, "the client closed the connection").payload(), status_code=499)

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception) -> JSONResponse:
        # A bug must still answer in OpenAI's shape (the server logs the traceback as well).
        error = APIError(500, f"internal error: {type(exc).__name__}: {exc}", kind="server_error")
        return JSONResponse(error.payload(), status_code=500)

    return Gate(app, api_key=api_key, max_body_bytes=service.limits.max_body_bytes)

"""The `openai` teacher backend: any OpenAI-compatible endpoint (OpenAI, vLLM, Ollama, llama.cpp, TGI).

Requests run on asyncio with the official `AsyncOpenAI` client (its own retries switched off, so
this module alone decides what is retried), at most `max_concurrency` in flight, under optional
requests-per-minute and tokens-per-minute buckets. Each attempt goes to the next live endpoint of
`base_urls` in turn, which spreads the load and makes a retry fail over by itself.

What happens to a failed attempt:
- 429, 408, 409, 5xx, a timeout, a broken connection, a malformed body: retried after
  `Retry-After` when the server sends one, else after a full-jitter exponential backoff
  (uniform in [0, min(backoff_max_s, backoff_base_s * 2**retry)]), up to `max_retries` times;
- 401, 403, 404 or a refused connection: the endpoint is unusable; it leaves the rotation at once
  and the request moves on to the next endpoint; when none is left every request still waiting
  fails with the endpoint's one-line reason, without being sent;
- any other 4xx, or an empty completion: that request fails, not retried.

The API key is read from the environment variable named by `api_key_env` when a batch starts and is
never stored on the backend; server messages are scrubbed of it before they become error text.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import random
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Literal, TypeVar

import openai
from pydantic import BaseModel, ConfigDict, Field, field_validator

from scalingdown.errors import UserError, redact
from scalingdown.teach.backend import (
    OnResult,
    Request,
    Result,
    SamplingParams,
    TeacherBackend,
    register_backend,
    validate_options,
)
from scalingdown.teach.ratelimit import TokenBucket

# A key is required by the client; local servers (vLLM, llama.cpp) accept any. Passing a placeholder
# also stops the client from falling back to OPENAI_API_KEY and sending a real key to a local server.
NO_KEY = "EMPTY"
# An endpoint that answered before is only dropped after this many refused connections in a row.
CONNECT_FAILURES_TO_DROP = 3
MAX_RETRY_AFTER_S = 600.0


class OpenAIOptions(BaseModel):
    """Options of an `openai` teacher."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: str = Field(
        description="Model name the endpoint serves (e.g. 'gpt-4o-mini', 'Qwen/Qwen2.5-7B-Instruct')."
    )
    base_urls: list[str] = Field(
        min_length=1,
        description="One or more endpoint URLs ending in /v1; requests are spread round-robin and fail over.",
    )
    api_key_env: str | None = Field(
        None, description="Name of the environment variable that holds the API key (never the key itself)."
    )
    api: Literal["chat", "completions"] = Field(
        "chat", description="Which API to call: 'chat' or 'completions'."
    )
    max_concurrency: int = Field(16, ge=1, description="Most requests in flight at once.")
    max_retries: int = Field(
        6, ge=0, description="Retries of one request after 429, 5xx, timeouts or bad bodies."
    )
    request_timeout_s: float = Field(60.0, gt=0, description="Seconds to wait for one response.")
    requests_per_minute: float | None = Field(None, gt=0, description="Request rate limit; empty means none.")
    tokens_per_minute: float | None = Field(
        None,
        gt=0,
        description="Token rate limit (prompt + completion, estimated up front); empty means none.",
    )
    backoff_base_s: float = Field(1.0, ge=0, description="First backoff step in seconds; doubles each retry.")
    backoff_max_s: float = Field(60.0, ge=0, description="Longest backoff between two attempts, in seconds.")

    @field_validator("base_urls", mode="before")
    @classmethod
    def _one_url_is_a_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("base_urls")
    @classmethod
    def _urls_are_http(cls, urls: list[str]) -> list[str]:
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{redact(url)!r} is not an http:// or https:// URL")
        return [url.rstrip("/") for url in urls]


@dataclass
class _Endpoint:
    url: str  # as configured; may hold credentials (`http://user:secret@host/v1`), so never shown
    client: openai.AsyncOpenAI
    dead: str | None = None  # why it left the rotation
    answered: bool = False  # has it ever answered 200?
    connect_failures: int = 0

    @property
    def label(self) -> str:
        """The URL as messages show it: credentials replaced by ***."""
        return redact(self.url)


@dataclass
class _Outcome:
    """How one attempt ended: `texts` on success, else `error` and what to do about it."""

    texts: list[str] | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str = ""
    action: Literal["done", "retry", "fail", "drop_endpoint"] = "done"
    retry_after: float | None = None
    estimated: bool = False  # the token counts are our estimate (the server reported none)


_T = TypeVar("_T")


def run_coroutine(coro: Awaitable[_T]) -> _T:
    """`asyncio.run`, also from inside a running event loop (Jupyter) by using a worker thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)  # type: ignore[arg-type]
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()  # type: ignore[arg-type]


@register_backend("openai")
class OpenAIBackend(TeacherBackend):
    """Completions from OpenAI-compatible HTTP endpoints; see the module docstring for the policy."""

    Options = OpenAIOptions

    def __init__(self, options: OpenAIOptions | dict):
        self.options = validate_options(OpenAIOptions, options)
        self.model = self.options.model
        self._api_key()  # a missing variable is a config mistake: say so now, not mid-run

    def __repr__(self) -> str:
        o = self.options
        urls = [redact(url) for url in o.base_urls]
        return f"OpenAIBackend(model={o.model!r}, base_urls={urls!r}, api_key_env={o.api_key_env!r})"

    def _api_key(self) -> str:
        env = self.options.api_key_env
        if env is None:
            return NO_KEY
        key = os.environ.get(env, "")
        if not key:
            raise UserError(
                f"api_key_env: the environment variable {env} is not set (it should hold the API key)"
            )
        return key

    def generate(
        self, requests: Sequence[Request], params: SamplingParams, *, on_result: OnResult | None = None
    ) -> list[Result]:
        if not requests:
            return []
        return run_coroutine(_Batch(self.options, self._api_key(), params, on_result).run(requests))


class _Batch:
    """The state of one `generate` call: endpoints, limits, and the retry loop of each request."""

    def __init__(self, options: OpenAIOptions, key: str, params: SamplingParams, on_result: OnResult | None):
        self.o, self.params, self.on_result = options, params, on_result
        self._key = key
        self._turn = 0
        self._rng = random.Random()
        self._caller_failed = False
        self.endpoints: list[_Endpoint] = []

    async def run(self, requests: Sequence[Request]) -> list[Result]:
        o = self.o
        self.endpoints = [
            _Endpoint(
                url,
                openai.AsyncOpenAI(
                    base_url=url, api_key=self._key, max_retries=0, timeout=o.request_timeout_s
                ),
            )
            for url in o.base_urls
        ]
        self.slots = asyncio.Semaphore(o.max_concurrency)
        self.rpm = TokenBucket(o.requests_per_minute) if o.requests_per_minute else None
        self.tpm = TokenBucket(o.tokens_per_minute) if o.tokens_per_minute else None
        tasks = [asyncio.ensure_future(self._request(r)) for r in requests]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            # `on_result` raised or the run was interrupted: stop the rest before the clients close,
            # so no request reports a bogus failure after the caller's exception.
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        finally:
            for endpoint in self.endpoints:
                await endpoint.client.close()

    def _scrub(self, text: str) -> str:
        """A message from the client or the server without the key or any URL's credentials."""
        if self._key != NO_KEY:
            text = text.replace(self._key, "***")
        for endpoint in self.endpoints:
            text = text.replace(endpoint.url, endpoint.label)
        return redact(text)[:300]

    def _next_endpoint(self) -> _Endpoint | None:
        live = [e for e in self.endpoints if e.dead is None]
        if not live:
            return None
        self._turn += 1
        return live[self._turn % len(live)]

    def _all_dead_reason(self) -> str:
        reasons = [e.dead for e in self.endpoints if e.dead]
        return reasons[0] if len(reasons) == 1 else "every endpoint is unusable: " + "; ".join(reasons)

    def _finish(self, result: Result) -> Result:
        if self.on_result is not None:
            if self._caller_failed:  # tasks finishing in the same loop turn must not report on
                raise asyncio.CancelledError
            try:
                self.on_result(result)
            except BaseException:
                self._caller_failed = True
                raise
        return result

    async def _request(self, request: Request) -> Result:
        if self.o.api == "completions" and not isinstance(request.prompt, str):
            return self._finish(
                Result(request.key, error="the completions API needs a text prompt, not chat messages")
            )
        estimate = len(json.dumps(request.prompt)) // 4 + self.params.max_tokens * self.params.n
        sent, retries_used = 0, 0
        wasted = {"wasted_prompt_tokens": 0, "wasted_completion_tokens": 0, "wasted_estimated": False}
        while True:
            endpoint = self._next_endpoint()
            if endpoint is None:
                return self._finish(
                    Result(request.key, error=self._all_dead_reason(), retries=max(sent - 1, 0), **wasted)
                )
            if self.rpm:
                await self.rpm.acquire(1)
            if self.tpm:
                await self.tpm.acquire(estimate)
            async with self.slots:
                if endpoint.dead is not None:  # it died while this request waited for a slot
                    continue
                outcome = await self._attempt(endpoint, request)
            sent += 1
            if self.tpm and outcome.texts is not None:
                self.tpm.adjust(outcome.prompt_tokens + outcome.completion_tokens - estimate)
            if outcome.action == "done":
                result = Result(
                    request.key,
                    outcome.texts or [],
                    outcome.prompt_tokens,
                    outcome.completion_tokens,
                    retries=sent - 1,
                    **wasted,
                )
                return self._finish(result)
            # A failed attempt may still have been paid for: count what it cost.
            wasted["wasted_prompt_tokens"] += outcome.prompt_tokens
            wasted["wasted_completion_tokens"] += outcome.completion_tokens
            wasted["wasted_estimated"] |= outcome.estimated
            if outcome.action == "fail":
                return self._finish(Result(request.key, error=outcome.error, retries=sent - 1, **wasted))
            if outcome.action == "drop_endpoint":
                if endpoint.dead is None:
                    endpoint.dead = outcome.error
                continue  # fail over at once: no backoff, no retry budget spent
            if retries_used >= self.o.max_retries:
                error = f"gave up after {sent} attempts; last: {outcome.error}"
                return self._finish(Result(request.key, error=error, retries=sent - 1, **wasted))
            delay = outcome.retry_after
            if delay is None:
                delay = self._rng.uniform(
                    0, min(self.o.backoff_max_s, self.o.backoff_base_s * 2**retries_used)
                )
            retries_used += 1
            await asyncio.sleep(delay)

    async def _attempt(self, endpoint: _Endpoint, request: Request) -> _Outcome:
        p, o = self.params, self.o
        args: dict[str, Any] = {
            "model": o.model,
            "max_tokens": p.max_tokens,
            "temperature": p.temperature,
            "top_p": p.top_p,
            "n": p.n,
        }
        if p.stop:
            args["stop"] = list(p.stop)
        if p.seed is not None:
            args["seed"] = p.seed
        try:
            if o.api == "chat":
                prompt = request.prompt
                messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
                response = await endpoint.client.chat.completions.create(messages=messages, **args)
            else:
                response = await endpoint.client.completions.create(prompt=request.prompt, **args)
        except openai.APIStatusError as exc:
            return self._status_outcome(endpoint, exc)
        except openai.APITimeoutError:
            # The server may well have generated (and billed) a whole answer we never read: counted
            # as an upper-bound estimate, the prompt at ~4 characters a token and max_tokens x n.
            return _Outcome(
                error=f"timed out after {o.request_timeout_s:g} s waiting for {endpoint.label}",
                action="retry",
                prompt_tokens=len(json.dumps(request.prompt)) // 4,
                completion_tokens=p.max_tokens * p.n,
                estimated=True,
            )
        except openai.APIConnectionError as exc:
            return self._connection_outcome(endpoint, exc)
        except (ValueError, openai.APIResponseValidationError) as exc:  # JSONDecodeError is a ValueError
            return _Outcome(
                error=f"malformed response from {endpoint.label} ({self._scrub(str(exc))})", action="retry"
            )
        except openai.OpenAIError as exc:
            return _Outcome(error=f"{endpoint.label}: {self._scrub(str(exc))}", action="fail")
        return self._parse(endpoint, response)

    def _parse(self, endpoint: _Endpoint, response: Any) -> _Outcome:
        n = self.params.n
        try:
            choices = sorted(response.choices, key=lambda c: c.index or 0)
            texts = [c.message.content if self.o.api == "chat" else c.text for c in choices]
            usage = getattr(response, "usage", None)
            prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
            completion_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
        except (AttributeError, TypeError, ValueError) as exc:
            return _Outcome(
                error=f"malformed response from {endpoint.label} ({type(exc).__name__})", action="retry"
            )
        endpoint.answered, endpoint.connect_failures = True, 0
        spent = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}  # paid all the same
        if len(texts) != n:
            error = f"asked {endpoint.label} for n={n} completions, got {len(texts)} (does it support n?)"
            return _Outcome(error=error, action="fail", **spent)
        if any(not (t or "").strip() for t in texts):
            return _Outcome(error="empty completion", action="fail", **spent)
        return _Outcome(texts=texts, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)

    def _status_outcome(self, endpoint: _Endpoint, exc: openai.APIStatusError) -> _Outcome:
        code, url = exc.status_code, endpoint.label
        try:
            phrase = HTTPStatus(code).phrase.lower()
        except ValueError:
            phrase = "error"
        detail = self._scrub(exc.message.split(" - ", 1)[-1]) if exc.message else ""
        env = self.o.api_key_env
        if code == 401:
            fix = (
                f"check the key in ${env}"
                if env
                else "the endpoint wants a key: name its variable in api_key_env"
            )
            return _Outcome(error=f"401 unauthorized from {url}: {fix}", action="drop_endpoint")
        if code == 403:
            fix = f"the key in ${env} may not use model {self.o.model!r}" if env else detail
            return _Outcome(error=f"403 forbidden from {url}: {fix}", action="drop_endpoint")
        if code == 404:
            error = (
                f"404 not found from {url}: model {self.o.model!r} is not served there, or the URL is wrong"
            )
            return _Outcome(error=f"{error} ({detail})" if detail else error, action="drop_endpoint")
        error = f"{code} {phrase} from {url}" + (f": {detail}" if detail else "")
        if code in (408, 409, 429) or code >= 500:
            return _Outcome(error=error, action="retry", retry_after=_retry_after_s(exc.response.headers))
        return _Outcome(error=error, action="fail")

    def _connection_outcome(self, endpoint: _Endpoint, exc: openai.APIConnectionError) -> _Outcome:
        cause = exc.__cause__
        # Class names, not classes: the client has used both `httpx` and `httpx2` for its transport.
        refused = type(cause).__name__ in ("ConnectError", "ConnectTimeout")
        detail = self._scrub(str(cause) or type(cause).__name__) if cause else "connection error"
        if not refused:
            return _Outcome(error=f"connection to {endpoint.label} broke ({detail})", action="retry")
        endpoint.connect_failures += 1
        error = f"cannot connect to {endpoint.label} ({detail})"
        if not endpoint.answered or endpoint.connect_failures >= CONNECT_FAILURES_TO_DROP:
            return _Outcome(error=error, action="drop_endpoint")
        return _Outcome(error=error, action="retry")


def _retry_after_s(headers: Any) -> float | None:
    """Seconds the server asks us to wait (`retry-after-ms` or `retry-after` in seconds), if any."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) * scale
        except ValueError:
            continue  # an HTTP date: fall back to our own backoff
        if 0 <= seconds <= MAX_RETRY_AFTER_S:
            return seconds
    return None

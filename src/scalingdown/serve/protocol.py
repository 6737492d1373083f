"""The OpenAI API's request and response shapes for `scalingdown serve`: parsing and checking
request bodies (each mistake an `APIError` with the status and the field it names) and building
completion responses.
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from scalingdown.evaluate.generation import Generation
from scalingdown.serve.batcher import SamplingKey

if TYPE_CHECKING:
    from scalingdown.serve.server import _App

MAX_BODY_BYTES = 16 * 1024 * 1024


# OpenAI's defaults: 16 new tokens for a completion; a chat reply runs on (here: up to a bound).
DEFAULT_COMPLETION_MAX_TOKENS = 16
DEFAULT_CHAT_MAX_TOKENS = 512
MAX_N = 128
# Fields asking for what this server does not do: refused when set, never silently ignored.
UNSUPPORTED = ("stream", "logprobs", "top_logprobs", "echo", "suffix", "tools", "functions")


class APIError(Exception):
    """An error answered in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, status: int, message: str, *, param=None, code=None, kind="invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind

    def payload(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


@dataclass
class ParsedRequest:
    """A request checked and ready to queue: its prompts and the sampling settings they share."""

    prompts: list[str]
    key: SamplingKey


def _number(request: dict, name: str, default, *, low, high, integer: bool = False, open_low: bool = False):
    value = request.get(name)
    if value is None:
        return default
    kinds = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise APIError(
            400, f"{name}: must be {'an integer' if integer else 'a number'}, got {value!r}", param=name
        )
    if not math.isfinite(value) or value < low or value > high or (open_low and value == low):
        span = f"{'more than' if open_low else 'at least'} {low} and at most {high}"
        raise APIError(400, f"{name}: must be {span}, got {value!r}", param=name)
    return value


def _stop(request: dict) -> tuple[str, ...]:
    stop = request.get("stop")
    if stop is None:
        return ()
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise APIError(400, f"stop: must be a string or a list of strings, got {stop!r}", param="stop")
    return tuple(s for s in stop if s)


def _refuse_unsupported(request: dict) -> None:
    for name in UNSUPPORTED:
        if request.get(name):
            raise APIError(400, f"{name}: not supported by this server", param=name)
    best_of = request.get("best_of")
    if best_of is not None and best_of != request.get("n", 1):
        raise APIError(400, "best_of: not supported by this server (only best_of == n)", param="best_of")


def _parse_sampling(
    request: dict, prompts: list[str], app: _App, *, field: str, default_max_tokens: int, param: str
) -> ParsedRequest:
    """Check the sampling fields and that every prompt fits the model's context with its max_tokens."""
    counts = [app.count_tokens(p) for p in prompts]
    if min(counts) == 0:
        raise APIError(400, f"{param}: empty prompt (no tokens)", param=param)
    longest, limit = max(counts), app.context_limit
    room = None if limit is None else limit - (0 if app.loaded.is_seq2seq else longest)
    if request.get(field) is None:
        max_tokens = default_max_tokens if room is None else min(default_max_tokens, room)
    else:
        max_tokens = _number(request, field, None, low=1, high=10**9, integer=True)
    if room is not None and (room < 1 or (not app.loaded.is_seq2seq and max_tokens > room)):
        asked = "" if app.loaded.is_seq2seq else f" plus {field}={max_tokens}"
        raise APIError(
            400,
            f"{param}: {longest} prompt tokens{asked} do not fit the model's context of {limit} tokens",
            param=param,
            code="context_length_exceeded",
        )
    key = SamplingKey(
        max_tokens=max_tokens,
        temperature=float(_number(request, "temperature", 1.0, low=0.0, high=2.0)),
        top_p=float(_number(request, "top_p", 1.0, low=0.0, high=1.0, open_low=True)),
        n=_number(request, "n", 1, low=1, high=MAX_N, integer=True),
        stop=_stop(request),
        seed=_number(request, "seed", None, low=0, high=2**62, integer=True),
    )
    return ParsedRequest(prompts, key)


def parse_completion(request: dict, app: _App) -> ParsedRequest:
    """A `/v1/completions` body: `prompt` is a string or a list of strings (not token ids)."""
    _refuse_unsupported(request)
    prompt = request.get("prompt")
    if isinstance(prompt, str):
        prompts = [prompt]
    elif isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        prompts = prompt
    elif isinstance(prompt, list) and prompt and not any(isinstance(p, str) for p in prompt):
        raise APIError(400, "prompt: token-id prompts are not supported; send text", param="prompt")
    else:
        raise APIError(400, "prompt: required, a string or a non-empty list of strings", param="prompt")
    return _parse_sampling(
        request,
        prompts,
        app,
        field="max_tokens",
        default_max_tokens=DEFAULT_COMPLETION_MAX_TOKENS,
        param="prompt",
    )


def _message_content(content, index: int) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    # The multi-part form: [{"type": "text", "text": ...}, ...]
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        return "".join(str(p.get("text", "")) for p in content)
    raise APIError(400, f"messages[{index}].content: must be a string or text parts", param="messages")


def parse_chat(request: dict, app: _App) -> ParsedRequest:
    """A `/v1/chat/completions` body: `messages` rendered by `render_chat` into one prompt."""
    _refuse_unsupported(request)
    raw = request.get("messages")
    if not isinstance(raw, list) or not raw:
        raise APIError(400, "messages: required, a non-empty list", param="messages")
    messages = []
    for i, message in enumerate(raw):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise APIError(400, f"messages[{i}]: must be an object with a 'role' string", param="messages")
        messages.append({"role": message["role"], "content": _message_content(message.get("content"), i)})
    try:
        prompt = app.render_chat(messages)
    except Exception as exc:  # the template's own checks (e.g. roles must alternate) raise
        raise APIError(400, f"messages: the chat template refused them ({exc})", param="messages") from None
    field = "max_completion_tokens" if request.get("max_completion_tokens") is not None else "max_tokens"
    return _parse_sampling(
        request, [prompt], app, field=field, default_max_tokens=DEFAULT_CHAT_MAX_TOKENS, param="messages"
    )


def completion_response(model: str, key: SamplingKey, generations: list[Generation], *, chat: bool) -> dict:
    """OpenAI's response body; prompt i's sample j is choice i * n + j.

    A choice that used all `max_tokens` ends with "length", any other with "stop" (EOS or a stop string).
    """
    choices = []
    for i, generation in enumerate(generations):
        for j, (text, tokens) in enumerate(zip(generation.texts, generation.new_tokens, strict=True)):
            choice: dict = {"index": i * key.n + j}
            if chat:
                choice["message"] = {"role": "assistant", "content": text}
            else:
                choice["text"] = text
            choice["logprobs"] = None
            choice["finish_reason"] = "length" if tokens >= key.max_tokens else "stop"
            choices.append(choice)
    prompt_tokens = sum(g.prompt_tokens for g in generations)
    completion_tokens = sum(sum(g.new_tokens) for g in generations)
    return {
        "id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}",
        "object": "chat.completion" if chat else "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }

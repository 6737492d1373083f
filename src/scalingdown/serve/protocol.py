"""The OpenAI API's request and response shapes for `scalingdown serve`.

Request bodies are pydantic models (FastAPI turns them into the OpenAPI document at
/openapi.json); the checks pydantic cannot do run in two steps: `check_before_tokenising` (the
limits of `ServeLimits`, unsupported fields, and the character bound of `check_characters`) and
`sampling_key`, which needs the prompts' token counts. Every mistake is an `APIError` answered in
OpenAI's shape with the status and the field it names; `validation_error` turns pydantic's errors
into one such 400.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from scalingdown.evaluate.generation import Generation
from scalingdown.serve.batcher import SamplingKey
from scalingdown.serve.limits import ServeLimits

# OpenAI's defaults: 16 new tokens for a completion; a chat reply runs on (here: up to a bound).
DEFAULT_COMPLETION_MAX_TOKENS = 16
DEFAULT_CHAT_MAX_TOKENS = 512
# Fields asking for what this server does not do: refused when set, never silently ignored.
UNSUPPORTED = ("stream", "logprobs", "top_logprobs", "echo", "suffix", "tools", "functions")
# Stop strings are compiled against the whole vocabulary on the model's worker: keep them few and short.
MAX_STOP_STRINGS, MAX_STOP_CHARS = 16, 256


@dataclass(frozen=True)
class ModelContext:
    """The model's context as the checks need it."""

    limit: int | None  # tokens; None: the config states no limit
    seq2seq: bool  # the prompt and the answer do not share the context
    chars_per_token: int | None  # see `scalingdown.serve.tokens.chars_per_token`


class APIError(Exception):
    """An error answered in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, status: int, message: str, *, param=None, code=None, kind="invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind

    def payload(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """The body of every error (documented in the OpenAPI document)."""

    error: ErrorDetail


StopString = Annotated[str, Field(max_length=MAX_STOP_CHARS)]


class _SamplingRequest(BaseModel):
    # strict: "5" is not 5 and true is not 1, as the old hand-written checks had it; extra fields
    # (user, presence_penalty, ...) are accepted and ignored, except the UNSUPPORTED ones.
    model_config = ConfigDict(extra="allow", strict=True)

    model: str = Field(min_length=1, description="The served model's name (GET /v1/models) or its path.")
    max_tokens: int | None = Field(None, ge=1, description="Most new tokens per sequence.")
    temperature: float | None = Field(
        None, ge=0, le=2, allow_inf_nan=False, description="0: greedy. Default 1."
    )
    top_p: float | None = Field(None, gt=0, le=1, allow_inf_nan=False, description="Nucleus sampling.")
    n: int | None = Field(None, ge=1, description="Sequences per prompt (greedy: n equal copies).")
    stop: StopString | Annotated[list[StopString], Field(max_length=MAX_STOP_STRINGS)] | None = Field(
        None, description="Text ends before the first of these strings."
    )
    seed: int | None = Field(None, ge=0, le=2**62, description="Makes sampling sent alone reproducible.")


class CompletionRequest(_SamplingRequest):
    """`POST /v1/completions`. Streaming, logprobs, echo and suffix are refused with a 400."""

    prompt: str | Annotated[list[str], Field(min_length=1)] = Field(
        description="A prompt, or a list of prompts (text, not token ids)."
    )
    best_of: int | None = Field(None, ge=1, description="Only best_of == n is supported.")

    @field_validator("prompt", mode="before")
    @classmethod
    def _no_token_ids(cls, value: Any) -> Any:
        if isinstance(value, list) and value and not any(isinstance(p, str) for p in value):
            raise ValueError("token-id prompts are not supported; send text")
        return value


class TextPart(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    type: Literal["text"]
    text: str = ""


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    role: str
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class ChatRequest(_SamplingRequest):
    """`POST /v1/chat/completions`: `messages` rendered by the model's chat template. No tools."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1, description="Wins over max_tokens when set.")


_FIELD_NAMES = {
    name for model in (CompletionRequest, ChatRequest, ChatMessage, TextPart) for name in model.model_fields
}


def validation_error(errors: Sequence[Any]) -> APIError:
    """FastAPI's 422 for a body as OpenAI's 400: the first wrong field, named as the client wrote it."""
    first = errors[0]
    if first.get("type") == "json_invalid":
        detail = first.get("ctx", {}).get("error", "")
        return APIError(400, f"the body is not valid JSON ({detail})")

    def where(error: Any) -> list:
        # loc is ("body", field, ...) with pydantic's labels of union branches ("str", "list[str]")
        # among the field names; keep what the client wrote: field names and list indices.
        return [p for p in error.get("loc", ())[1:] if isinstance(p, int) or p in _FIELD_NAMES]

    loc = where(first)
    if not loc:
        return APIError(400, "the body must be a JSON object")
    path = "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else p) for i, p in enumerate(loc))
    messages = dict.fromkeys(
        e.get("msg", "").removeprefix("Value error, ") for e in errors if where(e) == loc
    )
    return APIError(400, f"{path}: {'; '.join(messages)}", param=str(loc[0]))


@dataclass(frozen=True)
class Checked:
    """A request past the checks that need no tokenizer."""

    prompts: int  # how many prompts it sends
    field: str  # "max_tokens" or "max_completion_tokens": the one the client set or could set
    asked: int | None  # the max_tokens it asked for
    param: str  # "prompt" or "messages": what a context error names
    default_max_tokens: int


def check_before_tokenising(request: CompletionRequest | ChatRequest, limits: ServeLimits) -> Checked:
    """Unsupported fields, best_of, and the caps of `limits` on prompts x n and max_tokens."""
    extra = request.model_extra or {}
    for name in UNSUPPORTED:
        if extra.get(name):
            raise APIError(400, f"{name}: not supported by this server", param=name)
    n = request.n or 1
    if isinstance(request, CompletionRequest):
        if request.best_of is not None and request.best_of != n:
            raise APIError(400, "best_of: not supported by this server (only best_of == n)", param="best_of")
        prompts = 1 if isinstance(request.prompt, str) else len(request.prompt)
        field, param, default = "max_tokens", "prompt", DEFAULT_COMPLETION_MAX_TOKENS
        asked = request.max_tokens
    else:
        prompts, param, default = 1, "messages", DEFAULT_CHAT_MAX_TOKENS
        field = "max_completion_tokens" if request.max_completion_tokens is not None else "max_tokens"
        asked = (
            request.max_completion_tokens if request.max_completion_tokens is not None else request.max_tokens
        )
    if prompts * n > limits.max_sequences:
        raise APIError(
            400,
            f"{'n' if n > 1 else param}: {prompts} prompt{'s' if prompts > 1 else ''} x n={n} ask for "
            f"{prompts * n} sequences; this server allows at most {limits.max_sequences} per request "
            "(serve --max-sequences)",
            param="n" if n > 1 else param,
        )
    if asked is not None and asked > limits.max_tokens:
        raise APIError(
            400,
            f"{field}: {asked} is more than this server allows ({limits.max_tokens}; serve --max-tokens)",
            param=field,
        )
    return Checked(prompts, field, asked, param, min(default, limits.max_tokens))


def _context_error(param: str, what: str, asked: str, limit: int) -> APIError:
    return APIError(
        400,
        f"{param}: {what}{asked} do not fit the model's context of {limit} tokens",
        param=param,
        code="context_length_exceeded",
    )


def check_characters(texts: Sequence[str], checked: Checked, context: ModelContext) -> None:
    """Refuse, untokenised, a prompt whose length in characters alone proves it cannot fit.

    A prompt of more than `room x chars_per_token` characters has more than `room` tokens.
    """
    if context.limit is None or context.chars_per_token is None:
        return
    reserved = 0 if context.seq2seq else (checked.asked or 1)
    longest = max(len(text) for text in texts)
    if longest > max(0, context.limit - reserved) * context.chars_per_token:
        asked = "" if context.seq2seq or checked.asked is None else f" plus {checked.field}={checked.asked}"
        what = f"{longest} characters (at most {context.chars_per_token} per token)"
        raise _context_error(checked.param, what, asked, context.limit)


def sampling_key(
    request: CompletionRequest | ChatRequest, counts: Sequence[int], checked: Checked, context: ModelContext
) -> SamplingKey:
    """The settings to queue, once every prompt is known to fit the context with its max_tokens."""
    if min(counts) == 0:
        raise APIError(400, f"{checked.param}: empty prompt (no tokens)", param=checked.param)
    longest, limit = max(counts), context.limit
    room = None if limit is None else limit - (0 if context.seq2seq else longest)
    max_tokens = checked.asked
    if max_tokens is None:
        max_tokens = (
            checked.default_max_tokens if room is None else max(1, min(checked.default_max_tokens, room))
        )
    if room is not None and (room < 1 or (not context.seq2seq and max_tokens > room)):
        asked = "" if context.seq2seq else f" plus {checked.field}={max_tokens}"
        raise _context_error(checked.param, f"{longest} prompt tokens", asked, limit)
    stop = request.stop
    stops = [stop] if isinstance(stop, str) else (stop or [])
    return SamplingKey(
        max_tokens=max_tokens,
        temperature=1.0 if request.temperature is None else float(request.temperature),
        top_p=1.0 if request.top_p is None else float(request.top_p),
        n=request.n or 1,
        stop=tuple(s for s in stops if s),
        seed=request.seed,
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

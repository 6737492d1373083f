"""The teacher backend interface, its value types and the registry of backends.

One small interface in the manner of lm-evaluation-harness's `LM`: a backend turns a batch of
`Request`s into one `Result` per request, in order. Per-request failures are `Result`s with
`error` set, never exceptions, so one bad prompt (or one dead endpoint) cannot lose the answers
already gathered; `on_result` hands each result to the caller as it completes so it can persist
them at once.

Backends register under a name with `@register_backend("openai")` and are found with
`get_backend("openai")`. A backend lives in `scalingdown/teach/<name>_backend.py` and is imported
only when asked for, so an optional dependency (vLLM) costs nothing to users who do not use it.
"""

from __future__ import annotations

import importlib
import pkgutil
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ValidationError

from scalingdown.errors import UserError

Prompt = str | list[dict]  # plain text, or chat messages [{"role": ..., "content": ...}]


@dataclass(frozen=True)
class SamplingParams:
    """How to sample: the same fields every backend understands. Part of the cache key."""

    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 256
    n: int = 1  # completions per prompt
    stop: tuple[str, ...] = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be at least 1, got {self.n}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {self.max_tokens}")
        # A list from YAML/JSON would make the dataclass unhashable and the cache key unstable.
        object.__setattr__(self, "stop", tuple(self.stop))


@dataclass
class Request:
    """One prompt to complete. `key` is its stable id within a run (e.g. `"<problem id>/<sample>"`)."""

    key: str
    prompt: Prompt
    # What a backend may need beyond the prompt (e.g. the replay backend finds a rationale by its
    # problem's question). Not part of the cache key: it must not change what the prompt asks.
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Result:
    """What a backend returns for one request.

    `texts` holds `n` completions on success and is empty on failure; `error` is one line saying
    why it failed (never containing a secret). `retries` counts the attempts sent after the first;
    `prompt_tokens` / `completion_tokens` are the answer's, the `wasted_*` ones those of failed attempts.
    """

    key: str
    texts: list[str] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None
    from_cache: bool = False
    retries: int = 0
    # Tokens of attempts that gave no usable answer (a wrong number of completions, an empty one,
    # a timeout): paid for all the same. Measured where the server reported usage; for a timeout
    # estimated (prompt characters / 4 and max_tokens x n), and `wasted_estimated` says so.
    wasted_prompt_tokens: int = 0
    wasted_completion_tokens: int = 0
    wasted_estimated: bool = False
    # A recorded teacher (replay) whose file holds no rationale for this question: not a failure of
    # the work (nothing to retry; it was never written), counted apart as "not recorded".
    not_recorded: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None


OnResult = Callable[[Result], None]


class TeacherBackend(ABC):
    """Generates completions for a batch of prompts.

    Subclasses set `Options` (a pydantic model with `extra="forbid"`) and `model` (the model id,
    part of the cache key), and implement `generate`.
    """

    name: ClassVar[str] = ""  # set by @register_backend
    Options: ClassVar[type[BaseModel] | None] = None
    # False for a backend that can only give back what was written before (replay): it has nothing to
    # say about new questions, so the teach stage measures no free-mode accuracy for it.
    answers_new_questions: ClassVar[bool] = True
    model: str = ""

    @abstractmethod
    def generate(
        self,
        requests: Sequence[Request],
        params: SamplingParams,
        *,
        on_result: OnResult | None = None,
    ) -> list[Result]:
        """One `Result` per request, in the order given; `on_result` is called as each completes."""

    @classmethod
    def from_options(cls, options: Mapping[str, Any], *, where: str = "options") -> TeacherBackend:
        """Build the backend from a plain mapping (a config section); mistakes raise `UserError`."""
        if cls.Options is None:
            return cls()
        return cls(validate_options(cls.Options, options, where=where))

    def cache_identity(self) -> str:
        """What names this backend's model in the answer cache's key. Default: `model`. Backends of
        local models add what decides their answers beyond the name (see `local_model_identity`)."""
        return self.model

    def close(self) -> None:  # noqa: B027 - an optional hook, not abstract
        """Release what the backend holds (GPU memory, connections). Default: nothing."""


def local_model_identity(model: str, dtype: str) -> str:
    """A model as the cache knows it: a Hub id as it is; a local directory (or file) followed by a
    fingerprint of its files, so a model rebuilt or fine-tuned again in place never answers from the
    old model's cache; a dtype other than 'auto' after it, since it changes what the model writes."""
    from scalingdown.digests import tree_fingerprint

    fingerprint = tree_fingerprint(model)
    identity = model if fingerprint is None else f"{model}@{fingerprint}"
    return identity if dtype == "auto" else f"{identity}#dtype={dtype}"


_M = TypeVar("_M", bound=BaseModel)


def validate_options(model: type[_M], options: Mapping[str, Any] | _M, *, where: str = "options") -> _M:
    """Validate `options` against `model`; the first mistake becomes one `UserError` line."""
    if isinstance(options, model):
        return options
    try:
        return model.model_validate(dict(options))
    except ValidationError as exc:
        err = exc.errors()[0]
        path = ".".join(str(part) for part in (where, *err["loc"]))
        raise UserError(f"{path}: {err['msg'].removeprefix('Value error, ')}") from None


_REGISTRY: dict[str, type[TeacherBackend]] = {}
_B = TypeVar("_B", bound=type[TeacherBackend])


def register_backend(name: str) -> Callable[[_B], _B]:
    """Class decorator: make the backend available as `get_backend(name)`."""

    def decorate(cls: _B) -> _B:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"teacher backend {name!r} is registered twice ({_REGISTRY[name].__qualname__})")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def available_backends() -> list[str]:
    """Registered names plus the `<name>_backend` modules of this package (not yet imported)."""
    package = importlib.import_module("scalingdown.teach")
    found = {
        info.name.removesuffix("_backend")
        for info in pkgutil.iter_modules(package.__path__)
        if info.name.endswith("_backend")
    }
    return sorted(found | set(_REGISTRY))


def get_backend(name: str) -> type[TeacherBackend]:
    """The backend class registered as `name`, importing `scalingdown.teach.<name>_backend` on demand."""
    if name not in _REGISTRY and name.isidentifier():
        module = f"scalingdown.teach.{name}_backend"
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:  # the backend exists but one of its dependencies is missing
                raise UserError(
                    f"teacher backend {name!r} needs the package {exc.name!r}, which is not installed"
                ) from None
    if name not in _REGISTRY:
        known = ", ".join(repr(n) for n in available_backends()) or "none"
        raise UserError(f"unknown teacher backend {name!r}; known backends: {known}")
    return _REGISTRY[name]

"""The teach stage: teacher models write rationales for the training problems.

- `backend`: the `TeacherBackend` interface, `SamplingParams` / `Request` / `Result`, and the registry
  (`register_backend`, `get_backend`); each backend lives in `<name>_backend.py`, imported on demand.
- `openai_backend`: any OpenAI-compatible HTTP endpoint, with retries, failover and rate limits.
- `cache`: the SQLite response cache and `CachedBackend`, which sends only what is not stored.
"""

from scalingdown.teach.backend import (
    Request,
    Result,
    SamplingParams,
    TeacherBackend,
    available_backends,
    get_backend,
    register_backend,
)

__all__ = [
    "Request",
    "Result",
    "SamplingParams",
    "TeacherBackend",
    "available_backends",
    "get_backend",
    "register_backend",
]

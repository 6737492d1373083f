"""`scalingdown serve`: an OpenAI-compatible HTTP server for a local Hugging Face model.

Users serve a distilled student with it; the teach stage's tests and benchmarks use it as the real
server behind the `openai` teacher backend. `server` runs it (uvicorn in a background thread),
`app` is the HTTP API (FastAPI; its OpenAPI document is at /openapi.json), `protocol` the request
models, checks and limits, `tokens` the token counting that no request waits on for long, and
`batcher` the one worker thread that owns the model and batches requests.

    from scalingdown.serve import start_server
    with start_server("path/to/model", port=0) as server:
        ...  # openai.OpenAI(base_url=server.url, api_key="none")
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["BatchStats", "RunningServer", "SamplingKey", "serve", "start_server"]
_HOMES = {"BatchStats": "batcher", "SamplingKey": "batcher", "RunningServer": "server"}


def __getattr__(name: str) -> Any:
    # Loaded on first use: the batcher pulls in torch, and the CLI imports `serve.limits` for its
    # `--help` text, which must stay instant.
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES.get(name, 'server')}"), name)

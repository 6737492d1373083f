"""A SQLite cache of teacher responses, and a backend wrapper that answers from it first.

`ResponseCache` stores one row per successful request, keyed by `cache_key(backend, model, prompt,
params)`: a sha256 over a canonical JSON of everything that decides the answer (the seed is one of
the sampling params). SQLite in WAL mode makes each `put` an atomic, durable transaction, so a
process killed with SIGKILL mid-run leaves every finished row readable and no half row; readers in
other processes are never blocked by a writer. Each thread gets its own connection, since a
`sqlite3` connection must not be shared between threads without a lock.

`CachedBackend(backend, cache)` is itself a `TeacherBackend`: it answers the requests whose key is
stored, sends only the rest to the wrapped backend, and stores each success the moment it arrives,
before the caller's `on_result` sees it. A rerun after a crash therefore sends no request whose
answer is stored. Failures are never cached, so a rerun tries them again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from scalingdown.errors import UserError
from scalingdown.teach.backend import OnResult, Prompt, Request, Result, SamplingParams, TeacherBackend

SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    texts TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    created REAL NOT NULL
)
"""


def cache_key(backend: str, model: str, prompt: Prompt, params: SamplingParams) -> str:
    """sha256 hex of (backend name, model, prompt, every sampling param including the seed)."""
    payload = {
        "backend": backend,
        "model": model,
        "prompt": prompt,
        "params": dataclasses.asdict(params),
    }
    canonical = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass
class CachedResponse:
    """A stored answer: the completions and the tokens they cost when first asked."""

    texts: list[str]
    prompt_tokens: int = 0
    completion_tokens: int = 0
    created: float = field(default_factory=time.time)


class ResponseCache:
    """`get(key)` / `put(key, value)` over a SQLite file; safe across threads and processes."""

    def __init__(self, path: str | Path, *, busy_timeout_s: float = 60.0):
        self.path = Path(path)
        self.busy_timeout_s = busy_timeout_s
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._connection()  # open (and create) now, so a bad path fails here and not mid-run

    def _connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: autocommit, so each put is its own transaction and lands at once.
            conn = sqlite3.connect(
                self.path, timeout=self.busy_timeout_s, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode survives a killed process (not a power cut) and keeps puts fast.
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise UserError(f"cannot open the response cache ({exc})", path=self.path) from None
        self._local.conn = conn
        with self._lock:
            self._all.append(conn)
        return conn

    def get(self, key: str) -> CachedResponse | None:
        row = (
            self._connection()
            .execute(
                "SELECT texts, prompt_tokens, completion_tokens, created FROM responses WHERE key = ?", (key,)
            )
            .fetchone()
        )
        if row is None:
            return None
        return CachedResponse(json.loads(row[0]), row[1], row[2], row[3])

    def put(self, key: str, value: CachedResponse) -> None:
        self._connection().execute(
            "INSERT OR REPLACE INTO responses (key, texts, prompt_tokens, completion_tokens, created)"
            " VALUES (?, ?, ?, ?, ?)",
            (
                key,
                json.dumps(value.texts, ensure_ascii=False),
                value.prompt_tokens,
                value.completion_tokens,
                value.created,
            ),
        )

    def __contains__(self, key: str) -> bool:
        return (
            self._connection().execute("SELECT 1 FROM responses WHERE key = ?", (key,)).fetchone() is not None
        )

    def __len__(self) -> int:
        return self._connection().execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def keys(self) -> list[str]:
        return [row[0] for row in self._connection().execute("SELECT key FROM responses")]

    def close(self) -> None:
        """Close every thread's connection (checkpointing the WAL into the main file)."""
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()

    def __enter__(self) -> ResponseCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class CachedBackend(TeacherBackend):
    """Wraps a backend: stored answers come from the cache, only misses are sent, successes are stored."""

    def __init__(self, backend: TeacherBackend, cache: ResponseCache):
        self.backend, self.cache = backend, cache
        self.model = backend.model
        self._identity = backend.cache_identity()  # once: a local model's fingerprint reads its files

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.backend.name

    def __repr__(self) -> str:
        return f"CachedBackend({self.backend!r}, cache={str(self.cache.path)!r})"

    def key_of(self, request: Request, params: SamplingParams) -> str:
        return cache_key(self.backend.name, self._identity, request.prompt, params)

    def generate(
        self, requests: Sequence[Request], params: SamplingParams, *, on_result: OnResult | None = None
    ) -> list[Result]:
        results: list[Result | None] = [None] * len(requests)
        keys = [self.key_of(r, params) for r in requests]
        misses: list[int] = []
        for i, (request, key) in enumerate(zip(requests, keys, strict=True)):
            hit = self.cache.get(key)
            if hit is None:
                misses.append(i)
                continue
            results[i] = Result(
                request.key, hit.texts, hit.prompt_tokens, hit.completion_tokens, from_cache=True
            )
            if on_result is not None:
                on_result(results[i])
        # `on_result` gets a Result, not a position: request keys must tell the misses apart.
        key_by_request_key = {requests[i].key: keys[i] for i in misses}
        if len(key_by_request_key) != len(misses):
            raise ValueError("two requests of one batch share a key; request keys must be unique")

        def store_then_report(result: Result) -> None:
            if result.ok:
                value = CachedResponse(result.texts, result.prompt_tokens, result.completion_tokens)
                self.cache.put(key_by_request_key[result.key], value)
            if on_result is not None:
                on_result(result)

        sent = self.backend.generate([requests[i] for i in misses], params, on_result=store_then_report)
        for i, result in zip(misses, sent, strict=True):
            results[i] = result
        return [r for r in results if r is not None]

    def close(self) -> None:
        self.backend.close()

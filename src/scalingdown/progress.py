"""Progress of long work, on a terminal and in a log file alike.

On a terminal `Progress` is a tqdm bar. When stderr is not a terminal (a SLURM log, nohup, a CI job)
a bar would be nothing or a mess of carriage returns, and a run would print nothing for tens of
minutes; there `Progress` writes a plain line instead, when it starts, every
`SCALINGDOWN_PROGRESS_SECONDS` seconds (default 30) and when it ends:

    train student-64: 120/400 steps (30%), 2.1 steps/s, 57 s elapsed, ~2 min left, loss=1.234

`TQDM_DISABLE=1` silences both (tests), as does `enabled=False`.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, TextIO

INTERVAL_ENV = "SCALINGDOWN_PROGRESS_SECONDS"
DEFAULT_INTERVAL_S = 30.0


def interval_s() -> float:
    try:
        return max(0.0, float(os.environ.get(INTERVAL_ENV, DEFAULT_INTERVAL_S)))
    except ValueError:
        return DEFAULT_INTERVAL_S


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _silenced() -> bool:
    return os.environ.get("TQDM_DISABLE", "").lower() in ("1", "true", "yes")


class Progress:
    """`update(n)`, `set_postfix(**values)`, `close()`; a context manager. See the module docstring."""

    def __init__(
        self,
        total: int,
        desc: str,
        *,
        unit: str = "it",
        initial: int = 0,
        enabled: bool = True,
        stream: TextIO | None = None,
    ):
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self.stream = stream if stream is not None else sys.stderr
        self.postfix: dict[str, Any] = {}
        self._bar = None
        self._plain = False
        self._start = time.monotonic()
        self._initial = initial
        self._last = self._start
        if not enabled or _silenced():
            return
        if getattr(self.stream, "isatty", lambda: False)():
            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=total, initial=initial, desc=desc, unit=unit, leave=False, file=self.stream
            )
        else:
            self._plain = True
            self._line("started")

    def _line(self, state: str | None = None) -> None:
        elapsed = time.monotonic() - self._start
        share = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        parts = [f"{self.desc}: {self.n}/{self.total} {self.unit}{share}"]
        if state:
            parts.append(state)
        done = self.n - self._initial
        if done > 0 and elapsed > 0:
            rate = done / elapsed
            parts.append(f"{rate:.2f} {self.unit}/s" if rate < 10 else f"{rate:.0f} {self.unit}/s")
            parts.append(f"{_duration(elapsed)} elapsed")
            if self.total and self.n < self.total:
                parts.append(f"~{_duration((self.total - self.n) / rate)} left")
        parts += [f"{key}={value}" for key, value in self.postfix.items()]
        print(", ".join(parts), file=self.stream, flush=True)

    def update(self, n: int = 1) -> None:
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
        elif self._plain:
            now = time.monotonic()
            if now - self._last >= interval_s():
                self._last = now
                self._line()

    def set_postfix(self, **values: Any) -> None:
        self.postfix = {k: v for k, v in values.items() if k != "refresh"}
        if self._bar is not None:
            self._bar.set_postfix(**self.postfix, refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self._plain:
            self._plain = False
            self._line("done" if self.total and self.n >= self.total else "stopped")

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

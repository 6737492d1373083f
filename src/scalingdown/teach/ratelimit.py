"""An asyncio token bucket for requests-per-minute and tokens-per-minute limits.

API providers enforce their per-minute limits over short windows, so the bucket holds about one
second's worth of allowance (never less than one unit) rather than a whole minute's: a burst of a
full minute at start would only earn a wall of 429s. A cost larger than the bucket (one long
prompt under a small TPM limit) is let through once the bucket is full and drives it negative,
so the debt is paid by waiting before the next request instead of blocking forever. A cost
known only afterwards (the tokens a completion used) is settled with `adjust`.
"""

from __future__ import annotations

import asyncio
import time


class TokenBucket:
    """Refills at `per_minute / 60` units a second; `acquire(cost)` waits until `cost` fits."""

    def __init__(self, per_minute: float, *, burst_s: float = 1.0):
        if per_minute <= 0:
            raise ValueError(f"per_minute must be positive, got {per_minute}")
        self.rate_per_s = per_minute / 60.0
        self.capacity = max(1.0, self.rate_per_s * burst_s)
        self._level = self.capacity
        self._stamp = time.monotonic()
        self._lock = asyncio.Lock()  # created lazily bound to the running loop (Python >= 3.10)

    def _refill(self) -> None:
        now = time.monotonic()
        self._level = min(self.capacity, self._level + (now - self._stamp) * self.rate_per_s)
        self._stamp = now

    async def acquire(self, cost: float = 1.0) -> None:
        """Wait until `cost` units are available, then take them. FIFO through the lock."""
        async with self._lock:
            need = min(cost, self.capacity)
            while True:
                self._refill()
                if self._level >= need:
                    self._level -= cost
                    return
                await asyncio.sleep((need - self._level) / self.rate_per_s)

    def adjust(self, delta: float) -> None:
        """Settle an estimate after the fact: charge `delta` more units (or refund, if negative)."""
        self._refill()
        self._level = min(self.capacity, self._level - delta)

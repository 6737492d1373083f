"""Accounting for teacher requests: requests, cache hits, retries, failures, tokens and cost.

`usage.json` counts two things apart: what the answers held cost (every answer, cached or not:
what the rationales were worth) and what this run paid (answers that came from the backend now).
Attempts that gave no usable answer (a wrong number of completions, an empty one, a timeout) were
paid for too: their tokens are `wasted_*`, part of `cost` and `cost_this_run`; timed-out attempts'
tokens are an upper-bound estimate, and `wasted_estimated_requests` counts the requests with one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from scalingdown.teach.backend import Result

MAX_REASONS = 20  # distinct failure reasons kept in usage.json; the rest are counted as "other"


@dataclass
class Usage:
    price_input_per_1k: float = 0.0
    price_output_per_1k: float = 0.0
    answered: int = 0
    requests_sent: int = 0  # answered by the backend in this run (not from the cache)
    cache_hits: int = 0
    retries: int = 0
    failures: Counter = field(default_factory=Counter)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prompt_tokens_this_run: int = 0
    completion_tokens_this_run: int = 0
    wasted_prompt_tokens: int = 0
    wasted_completion_tokens: int = 0
    wasted_estimated_requests: int = 0
    not_recorded: int = 0  # a recorded teacher's file holds no rationale for the question

    def add(self, result: Result) -> None:
        self.retries += result.retries
        self.wasted_prompt_tokens += result.wasted_prompt_tokens
        self.wasted_completion_tokens += result.wasted_completion_tokens
        self.wasted_estimated_requests += bool(result.wasted_estimated)
        if result.not_recorded:
            self.not_recorded += 1
            return
        if not result.ok:
            reason = result.error or "unknown error"
            if reason not in self.failures and len(self.failures) >= MAX_REASONS:
                reason = "other"
            self.failures[reason] += 1
            return
        self.answered += 1
        self.prompt_tokens += result.prompt_tokens
        self.completion_tokens += result.completion_tokens
        if result.from_cache:
            self.cache_hits += 1
        else:
            self.requests_sent += 1
            self.prompt_tokens_this_run += result.prompt_tokens
            self.completion_tokens_this_run += result.completion_tokens

    def price(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (
            prompt_tokens / 1000 * self.price_input_per_1k
            + completion_tokens / 1000 * self.price_output_per_1k
        )

    @property
    def wasted_cost(self) -> float:
        return self.price(self.wasted_prompt_tokens, self.wasted_completion_tokens)

    @property
    def cost(self) -> float:
        """The answers' worth plus what failed attempts of this run cost."""
        return self.price(self.prompt_tokens, self.completion_tokens) + self.wasted_cost

    @property
    def cost_this_run(self) -> float:
        return self.price(self.prompt_tokens_this_run, self.completion_tokens_this_run) + self.wasted_cost

    def as_dict(self) -> dict:
        return {
            "answered": self.answered,
            "failed": sum(self.failures.values()),
            "failure_reasons": dict(self.failures.most_common()),
            "not_recorded": self.not_recorded,
            "requests_sent": self.requests_sent,
            "cache_hits": self.cache_hits,
            "retries": self.retries,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost": self.cost,
            "prompt_tokens_this_run": self.prompt_tokens_this_run,
            "completion_tokens_this_run": self.completion_tokens_this_run,
            "cost_this_run": self.cost_this_run,
            "wasted_prompt_tokens": self.wasted_prompt_tokens,
            "wasted_completion_tokens": self.wasted_completion_tokens,
            "wasted_estimated_requests": self.wasted_estimated_requests,
            "wasted_cost": self.wasted_cost,
            "price_input_per_1k": self.price_input_per_1k,
            "price_output_per_1k": self.price_output_per_1k,
        }


@contextmanager
def progress_bar(
    total: int, label: str, usage: Usage, *, enabled: bool = True
) -> Iterator[Callable[[Result], None]]:
    """A progress bar (or plain lines in a log; `scalingdown.progress`) whose postfix shows tokens,
    cost and failures; yields `on_result`."""
    from scalingdown.progress import Progress

    with Progress(total, label, unit="questions", enabled=enabled) as bar:

        def on_result(result: Result) -> None:
            usage.add(result)
            bar.update(1)
            bar.set_postfix(
                tokens=usage.prompt_tokens + usage.completion_tokens,
                cost=f"{usage.cost:.4f}",
                failed=sum(usage.failures.values()),
            )

        yield on_result

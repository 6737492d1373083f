"""What one request may ask of `scalingdown serve`: the typed source of its `--max-*` options.

Kept apart from `protocol` (which needs torch through the batcher) so that the CLI can take the
options' defaults and `--help` text from here and still answer at once.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

MiB = 2**20


class ServeLimits(BaseModel):
    """What one request may ask of the server; the `serve` options of the same names."""

    max_sequences: int = Field(
        256,
        ge=1,
        description="Most sequences one request may ask for: its prompts times n (a 400 beyond).",
    )
    max_tokens: int = Field(
        4096,
        ge=1,
        description="Largest max_tokens (or max_completion_tokens) a request may ask for (a 400 beyond). "
        "A request that sets none gets OpenAI's default (16; chat 512) or this, whichever is smaller.",
    )
    max_body_mb: float = Field(
        8.0, gt=0, description="Largest request body in MiB; a bigger one gets a 400 before it is parsed."
    )

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * MiB)

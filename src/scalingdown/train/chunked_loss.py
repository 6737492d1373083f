"""The student's loss without a (tokens x vocab) logits tensor: cross-entropy over target positions
only, a chunk at a time.

Why. The plain path (`objective.example_losses` on `model(...).logits`) holds the logits of every
position, (B, T, V): for SmolLM2 (V = 49,152) at 8 x 512 tokens that is 4,088 x 49,152 floats,
804 MB in float32, and the cross-entropy keeps its log-softmax (as much again) for the backward
pass, whose gradient is a third copy. Qwen's 151,936-token vocabulary triples all of it. Most of
those rows are never scored either: prompt and padding positions carry the label -100.

What happens here instead (causal students; `StudentLoss` does it around the model's forward):

    hidden   (B, T, H)  the decoder's last hidden states, what the LM head reads (a forward hook on
                        `get_decoder()`; the model itself is called with `logits_to_keep=1`, so its
                        own head projects one position per row)
    targets  (B, T)     labels shifted left by one (position t predicts token t + 1), -100 at the end
    mask     (B, T)     targets != -100: the N positions that are scored
    h, y     (N, H), (N,)   hidden[mask], targets[mask], row by row in position order
    for each chunk of C positions:
        loss_c = cross_entropy(head(h_c).float(), y_c)      head(h_c) is (C, V), loss_c (C,)
    per example: the sum of its token losses / its number of targets                      (B,)

Each chunk runs under `torch.utils.checkpoint`: its logits are freed as soon as its losses are
taken and recomputed in the backward pass, so at most one chunk's (C, V) logits, log-softmax and
gradient are alive at any time. C = CHUNK_LOGITS // V positions (682 for SmolLM2, 220 for Qwen2.5),
i.e. about 128 MB of float32 logits a chunk whatever the vocabulary. The price is the head's
matmul done twice for scored positions (a few percent of a step for a 135M model).

The result equals `example_losses` on the full logits: the same float32 cross-entropy on the same
rows, only summed in another order (a relative difference of order 1e-7), and so do the gradients.
The head is the model's own output-embedding module (LoRA on it, if any, included), followed by
Gemma-style `final_logit_softcapping` where the config has one. On its first batch `StudentLoss`
checks that this reproduces the model's own logits at the last position; a model that does more
between its decoder and its logits (a scale, another cap) fails that check and is trained on the
full logits from then on, with a warning.

Full logits (the plain path) are also used for seq2seq students (T5 rescales its decoder's output
before the head in some configurations, and its labels feed the decoder), for models whose forward
takes no `logits_to_keep` (older or remote-code architectures), and when the loop says so (FSDP and
DeepSpeed ZeRO-3 shard the head's weight outside the model's forward, so it cannot be called here).
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from scalingdown.train.objective import IGNORE_INDEX, example_losses

# Logits computed at once: 2**25 floats = 128 MB in float32. Small enough that a chunk's logits,
# log-softmax and gradient stay a few hundred MB; large enough that the head's matmul stays efficient.
CHUNK_LOGITS = 1 << 25
MIN_CHUNK = 64

Head = Callable[[Tensor], Tensor]  # (n, H) hidden states -> (n, V) logits
# What the white-box term reads: full (B, L, V) logits, or a function from a (B,) bool row mask to
# those rows' logits at their target positions, (n, V) in position order.
StudentLogits = Tensor | Callable[[Tensor], Tensor]


def chunk_positions(vocab: int) -> int:
    """Positions a chunk holds for a vocabulary of `vocab`: CHUNK_LOGITS // vocab, at least MIN_CHUNK."""
    return max(MIN_CHUNK, CHUNK_LOGITS // vocab)


def shifted_targets(labels: Tensor, *, shift: bool) -> Tensor:
    """(B, T): the label each position predicts. With `shift` (causal LMs) position t predicts
    labels[:, t + 1] and the last position predicts nothing (-100); without, labels as they are."""
    if not shift:
        return labels
    return F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)


def _token_losses(head: Head, hidden: Tensor, targets: Tensor) -> Tensor:
    """(C,) float32 cross-entropy of one chunk: hidden (C, H), targets (C,)."""
    return F.cross_entropy(head(hidden).float(), targets, reduction="none")


def chunked_example_losses(
    hidden: Tensor, labels: Tensor, head: Head, *, shift: bool, chunk_size: int
) -> Tensor:
    """Each example's mean cross-entropy over its target tokens, (B,), as `example_losses` gives it
    for the logits head(hidden), without ever holding more than `chunk_size` positions' logits.

    hidden (B, T, H), labels (B, T) with -100 where nothing is learned; `head` maps (n, H) to (n, V).
    An example without target tokens has loss 0 and gives no gradient.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    targets = shifted_targets(labels, shift=shift)
    mask = targets != IGNORE_INDEX
    rows = mask.nonzero()[:, 0]  # the example of each scored position, (N,)
    h, y = hidden[mask], targets[mask]
    # Outside autograd (evaluation) nothing is kept for a backward pass, so nothing needs recomputing.
    recompute = torch.is_grad_enabled()
    parts = []
    for start in range(0, h.shape[0], chunk_size):
        piece = (head, h[start : start + chunk_size], y[start : start + chunk_size])
        parts.append(
            checkpoint(_token_losses, *piece, use_reentrant=False) if recompute else _token_losses(*piece)
        )
    size = labels.shape[0]
    sums = torch.zeros(size, dtype=torch.float32, device=hidden.device)
    if parts:
        sums = sums.index_add(0, rows, torch.cat(parts))
    else:  # no target in the whole batch: zeros that still belong to the graph, as the plain path's do
        sums = sums + hidden.sum() * 0
    return sums / mask.sum(dim=1).clamp(min=1)


def transformers_model(model: nn.Module) -> nn.Module:
    """The transformers model inside a PEFT wrapper (LoRA layers live in it), or `model` itself."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def why_full_logits(model: nn.Module, *, is_seq2seq: bool) -> str | None:
    """Why `model` (a transformers model, maybe PEFT-wrapped) is trained on full logits; None when
    the chunked path applies."""
    base = transformers_model(model)
    if is_seq2seq:
        return "a seq2seq student"
    if "logits_to_keep" not in inspect.signature(base.forward).parameters:
        return f"{type(base).__name__}.forward takes no logits_to_keep"
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else None
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    if decoder is None or decoder is base or head is None:
        return f"{type(base).__name__} has no separate decoder and output head"
    return None


class StudentLoss:
    """Per-example losses (B,) of a student on a collated batch, by the chunked path where the model
    allows it (see the module docstring), else from the full logits exactly as before.

    `model` is the unwrapped model (PEFT or transformers) whose modules are inspected; each call
    gets the model to run, which may be a wrapper of it (DDP), so that the wrapper's forward runs.
    `autocast` is the context the model's forward runs in (Accelerate's mixed precision): the head
    runs in it too, so its logits have the dtype the model's own would have.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        is_seq2seq: bool,
        chunked: bool = True,
        autocast: Callable[[], AbstractContextManager] = nullcontext,
        chunk_size: int | None = None,
    ) -> None:
        self.is_seq2seq = is_seq2seq
        self.autocast = autocast
        self.full_logits_because = why_full_logits(model, is_seq2seq=is_seq2seq) if chunked else "asked for"
        self._checked = False
        if self.full_logits_because is None:
            base = transformers_model(model)
            self.decoder = base.get_decoder()
            self.head = base.get_output_embeddings()
            self.softcap = getattr(base.config, "final_logit_softcapping", None)
            vocab = getattr(self.head, "out_features", None) or base.config.vocab_size
            self.chunk_size = chunk_size or chunk_positions(vocab)

    @property
    def chunked(self) -> bool:
        return self.full_logits_because is None

    def logits(self, hidden: Tensor) -> Tensor:
        """(..., V): what the model's head makes of hidden states (..., H)."""
        logits = self.head(hidden)
        if self.softcap is not None:  # Gemma 2: logits squashed into (-cap, cap)
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits

    def __call__(self, model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, StudentLogits]:
        """(example losses (B,), the student's logits for the white-box term). batch holds
        input_ids, attention_mask and labels (B, T), as `train.batching.collate` makes them."""
        if not self.chunked:
            return self._full(model, batch)
        captured: list[Tensor] = []
        hook = self.decoder.register_forward_hook(lambda _m, _a, out: captured.append(out[0]))
        try:
            output = model(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                use_cache=False,
                logits_to_keep=1,
            )
        finally:
            hook.remove()
        if not self._checked and not self._reproduces(captured, output.logits, model):
            return self._full(model, batch)
        hidden, labels = captured[-1], batch["labels"]
        with self.autocast():
            losses = chunked_example_losses(
                hidden, labels, self.logits, shift=True, chunk_size=self.chunk_size
            )

        def rows_logits(rows: Tensor) -> Tensor:
            mask = shifted_targets(labels[rows], shift=True) != IGNORE_INDEX
            with self.autocast():
                return self.logits(hidden[rows][mask])

        return losses, rows_logits

    def _full(self, model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """The plain path: the model's logits (B, T, V), scored by `example_losses`."""
        output = model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            use_cache=False,  # training never reads a KV cache
            **({"labels": batch["labels"]} if self.is_seq2seq else {}),
        )
        return example_losses(output.logits, batch["labels"], shift=not self.is_seq2seq), output.logits

    def _reproduces(self, captured: list[Tensor], last_logits: Tensor, model: nn.Module) -> bool:
        """Once: do the hooked hidden states (B, T, H) and `logits` give the model's own logits at the
        last position, (B, 1, V)? If not, this model is trained on full logits from now on."""
        self._checked = True
        agree, last_logits = False, last_logits.detach()
        if captured and captured[-1].dim() == 3:
            with torch.no_grad(), self.autocast():
                ours = self.logits(captured[-1][:, -1:])
            # float32 throughout: only the matmul's summation order differs; under mixed precision
            # both sides round to bf16/fp16, about 1e-2 relative.
            exact = ours.dtype == last_logits.dtype == torch.float32
            tolerance = (1e-4 if exact else 3e-2) * float(last_logits.abs().max().clamp(min=1e-6))
            agree = (
                ours.shape == last_logits.shape
                and float((ours.float() - last_logits.float()).abs().max()) <= tolerance
            )
        if not agree:
            self.full_logits_because = (
                "its logits are not its output embeddings applied to its decoder's states"
            )
            warnings.warn(
                f"{type(transformers_model(model)).__name__}: {self.full_logits_because}; training on "
                "full logits (more memory)",
                stacklevel=3,
            )
        return agree

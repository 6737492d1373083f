"""Measuring prompts for `scalingdown serve` without letting one prompt hold up the others.

Every request's prompts are counted (and chats rendered) before they are queued, so that a prompt
that does not fit the model's context gets a 400 instead of a silently truncated answer. Two
things keep that cheap for everyone:

- `chars_per_token`: for a tokenizer that never turns more characters into a token than the
  token's own text has, a prompt longer than `room x chars_per_token` characters provably cannot
  fit, and is refused without being tokenised (the 15 MiB prompt of issue 10 took 36 s to count).
- `TokenizerPool`: counting runs on a few threads, each with its own tokenizer copy, not on the
  event loop and not under one shared lock. The Rust tokenizer releases the GIL while it works, so
  a long count occupies one thread while small requests are counted on the others. (Copies, because
  a Rust tokenizer used from two threads at once raises, and the model's worker changes its own
  tokenizer's truncation settings while it generates.)
"""

from __future__ import annotations

import copy
import json
import queue
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

# Parts of a `tokenizers` pipeline that never shrink the text: every input character reaches the
# model as at least one character of some token's vocabulary string. Anything else (NFC composing
# two characters into one, Strip, a whitespace-splitting pre-tokenizer, WordPiece's [UNK] for a
# whole long word) can make many characters into one token, and then no character bound holds.
_KEEPING_NORMALIZERS = {"NFD", "NFKD", "Lowercase", "Prepend"}
_KEEPING_PRE_TOKENIZERS = {"ByteLevel", "Digits", "Metaspace", "Punctuation", "UnicodeScripts", "Split"}

DEFAULT_WORKERS = 4


def _parts(component: dict | None, list_key: str) -> list[dict]:
    if component is None:
        return []
    if component.get("type") == "Sequence":
        return [part for nested in component[list_key] for part in _parts(nested, list_key)]
    return [component]


def _keeps_characters(normalizer: dict) -> bool:
    if normalizer.get("type") in _KEEPING_NORMALIZERS:
        return True
    if normalizer.get("type") == "Replace":  # Llama's and Gemma's " " -> "▁": one for one
        pattern = normalizer.get("pattern", {})
        return "String" in pattern and len(normalizer.get("content", "")) >= len(pattern["String"])
    return False


def chars_per_token(tokenizer: Any) -> int | None:
    """The most characters of a prompt one token can stand for, when that is provable; else None.

    Provable for byte-level or byte-fallback BPE tokenizers whose normaliser and pre-tokeniser keep
    every character (GPT-2, Llama 3, SmolLM, Llama 2, Gemma): then each token covers at most as
    many characters as its vocabulary string has, special tokens included.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    spec = json.loads(backend.to_str())
    model = spec.get("model", {})
    if model.get("type") != "BPE":
        return None
    if not all(_keeps_characters(part) for part in _parts(spec.get("normalizer"), "normalizers")):
        return None
    pre = _parts(spec.get("pre_tokenizer"), "pretokenizers")
    if not all(p.get("type") in _KEEPING_PRE_TOKENIZERS and p.get("behavior") != "Removed" for p in pre):
        return None
    # Without byte fallback an unknown character becomes the unknown token, and fuse_unk makes a
    # whole run of them one token; byte-level BPE has no unknown characters at all.
    if not model.get("byte_fallback") and not any(p.get("type") == "ByteLevel" for p in pre):
        return None
    # An added token that strips the spaces beside it swallows any number of them.
    if any(t.get("lstrip") or t.get("rstrip") for t in spec.get("added_tokens", [])):
        return None
    return max(len(token) for token in tokenizer.get_vocab())


def render_chat(tokenizer: Any, messages: list[dict]) -> str:
    """The prompt for chat `messages`: the tokenizer's chat template, else "role: content" lines.

    The fallback ends with "assistant:" so the model writes the assistant's turn. A template that
    writes the BOS token itself loses it here when the tokenizer adds BOS anyway, so the prompt
    does not start with two.
    """
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        bos = tokenizer.bos_token
        if bos and text.startswith(bos):
            ids = tokenizer("x")["input_ids"]
            if ids and ids[0] == tokenizer.bos_token_id:
                text = text[len(bos) :]
        return text
    lines = [f"{m['role']}: {m['content']}" for m in messages]
    return "\n".join([*lines, "assistant:"])


class TokenizerPool:
    """`workers` threads, each with its own copy of `tokenizer`, for counting and chat rendering.

    `count` and `render` borrow a copy for the length of one call; `submit` runs them on the pool's
    threads (there are as many copies as threads, so a call there never waits for a copy).
    """

    def __init__(self, tokenizer: Any, *, workers: int = DEFAULT_WORKERS):
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self._copies: queue.Queue = queue.Queue()
        for _ in range(workers):
            self._copies.put(copy.deepcopy(tokenizer))
        self._threads = ThreadPoolExecutor(workers, thread_name_prefix="scalingdown-serve-tokenize")
        self.chars_per_token = chars_per_token(tokenizer)

    def _borrow(self, use: Callable[[Any], Any]) -> Any:
        tokenizer = self._copies.get()
        try:
            return use(tokenizer)
        finally:
            self._copies.put(tokenizer)

    def count(self, texts: list[str]) -> list[int]:
        """Tokens in each text, special tokens included (as the model will see it)."""
        return self._borrow(lambda tok: [len(ids) for ids in tok(texts, verbose=False)["input_ids"]])

    def render(self, messages: list[dict]) -> str:
        return self._borrow(lambda tok: render_chat(tok, messages))

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        return self._threads.submit(fn, *args)

    def close(self) -> None:
        """Drop queued work and let the threads end (a count in progress finishes on its own)."""
        self._threads.shutdown(wait=False, cancel_futures=True)

"""The tiny-model factory: a locally trained tokenizer and a small model built from a config.

Tests and the offline demo need real Hugging Face models without a download. `build_tiny` makes one:
it trains a byte-level BPE tokenizer on the task's text, builds a Llama, GPT-2 or T5 model of a few
layers from a config written in code, optionally pretrains it (`scalingdown.models.pretrain`), and
saves both with `save_pretrained`, so the result loads through `AutoModelFor*.from_pretrained` and
`AutoTokenizer.from_pretrained` (or `scalingdown.models.loading.load_model`) like any Hub model.

A build directory records what it was built from in `tiny_build.json`; asking for the same config,
seed and data again reuses it instead of rebuilding.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    T5Config,
    T5ForConditionalGeneration,
)
from transformers.utils import logging as hf_logging

from scalingdown.artifacts import atomic_directory
from scalingdown.config import TinyModelConfig
from scalingdown.errors import UserError

# Our own progress bars say what is happening; transformers' per-file bars would only add noise.
hf_logging.disable_progress_bar()

SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
ARCHS = ("llama", "gpt2", "t5")
BUILD_RECORD = "tiny_build.json"
# Bump when the way a tiny model is built changes, so old build directories are not reused.
BUILD_FORMAT = 1


def train_tokenizer(texts: Iterable[str], *, vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on `texts`.

    Digits are split one by one before BPE (as Llama 2, SmolLM and Qwen-style tokenizers do), so
    "1234" is always the tokens "1" "2" "3" "4": a tiny model then sees numbers digit by digit and
    can learn arithmetic. Byte-level BPE with the full 256-byte alphabet encodes any text, and
    `decode(encode(text)) == text` exactly (no clean-up of spaces, no prefix space). The alphabet
    and the four special tokens take 260 ids, so `vocab_size` must be at least that; the result
    can be smaller than `vocab_size` when the texts offer fewer merges. No special token is added
    by `tokenizer(text)`: a training text ends with eos because the trainer appends it.
    """
    smallest = len(pre_tokenizers.ByteLevel.alphabet()) + len(SPECIAL_TOKENS)
    if vocab_size < smallest:
        raise UserError(
            f"tiny.vocab_size: {vocab_size} is too small; a byte-level BPE needs at least {smallest} "
            "(256 bytes and 4 special tokens)"
        )
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, clean_up_tokenization_spaces=False, **SPECIAL_TOKENS
    )


def build_model(
    arch: str,
    tokenizer: PreTrainedTokenizerFast,
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    max_positions: int = 512,
    seed: int = 0,
) -> PreTrainedModel:
    """A freshly initialised model of `arch` ('llama', 'gpt2' or 't5') sized for `tokenizer`.

    Every family uses a feed-forward width of 4 x `hidden_size`, tied input/output embeddings and no
    dropout (tiny models on small data underfit rather than overfit). The weights depend only on
    `seed`; the global torch RNG is left as it was.
    """
    if arch not in ARCHS:
        raise UserError(f"tiny.arch: unknown architecture {arch!r}; expected one of {', '.join(ARCHS)}")
    if hidden_size % num_heads:
        raise UserError(f"tiny.hidden_size: {hidden_size} is not divisible by tiny.num_heads ({num_heads})")
    special = {
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    vocab_size = len(tokenizer)
    if arch == "llama":
        config = LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=hidden_size,
            intermediate_size=4 * hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            num_key_value_heads=num_heads,
            max_position_embeddings=max_positions,
            tie_word_embeddings=True,
            **special,
        )
        model_class = LlamaForCausalLM
    elif arch == "gpt2":
        config = GPT2Config(
            vocab_size=vocab_size,
            n_embd=hidden_size,
            n_layer=num_layers,
            n_head=num_heads,
            n_positions=max_positions,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            tie_word_embeddings=True,
            **special,
        )
        model_class = GPT2LMHeadModel
    else:
        # T5 has relative position buckets, no position table: max_positions only bounds the tokenizer.
        config = T5Config(
            vocab_size=vocab_size,
            d_model=hidden_size,
            d_kv=hidden_size // num_heads,
            d_ff=4 * hidden_size,
            num_layers=num_layers,
            num_decoder_layers=num_layers,
            num_heads=num_heads,
            dropout_rate=0.0,
            decoder_start_token_id=tokenizer.pad_token_id,  # the T5 convention
            **special,
        )
        model_class = T5ForConditionalGeneration
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class(config)
    return model.eval()


def texts_sha256(texts: Iterable[str]) -> str:
    """A hash of a sequence of texts (order matters; boundaries are unambiguous)."""
    digest = hashlib.sha256()
    for text in texts:
        data = text.encode("utf-8")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


def _fingerprint(
    config: TinyModelConfig, texts: Sequence[str], seed: int, pretrain_texts: Sequence[str] | None
) -> dict:
    """What a build depends on; equal fingerprints mean an existing build can be reused."""
    return {
        "format": BUILD_FORMAT,
        "config": config.model_dump(mode="json"),
        "seed": seed,
        "texts_sha256": texts_sha256(texts),
        "pretrain_texts_sha256": texts_sha256(pretrain_texts) if pretrain_texts is not None else None,
    }


def is_complete_build(out_dir: Path, fingerprint: dict | None = None) -> bool:
    """True when `out_dir` holds a finished tiny build (and, if given, one with this fingerprint)."""
    record_path = out_dir / BUILD_RECORD
    needed = ("config.json", "tokenizer.json", "tokenizer_config.json")
    if not record_path.is_file() or not all((out_dir / name).is_file() for name in needed):
        return False
    if not any((out_dir / name).is_file() for name in ("model.safetensors", "model.safetensors.index.json")):
        return False
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return fingerprint is None or record.get("fingerprint") == fingerprint


def build_tiny(
    config: TinyModelConfig,
    texts: Sequence[str],
    out_dir: str | Path,
    *,
    seed: int,
    pretrain_texts: Sequence[str] | None = None,
    progress: bool = True,
) -> Path:
    """Build (or reuse) a tiny model with its tokenizer in `out_dir`; returns `out_dir`.

    The tokenizer is trained on `texts`. When `config.pretrain_steps > 0` the model is pretrained
    on `pretrain_texts` (default: `texts`). The directory is written under a temporary name beside
    `out_dir` and renamed into place when complete, so a crash never leaves a half-built model that
    looks finished. `tiny_build.json` records the config, seed, data hashes and pretraining losses.
    """
    from scalingdown.models.pretrain import pretrain_causal_lm  # pretrain imports nothing from here

    out_dir = Path(out_dir)
    texts = list(texts)
    if not texts:
        raise UserError("no texts to train the tiny model's tokenizer on", path=out_dir)
    if config.pretrain_steps > 0:
        pretrain_texts = list(pretrain_texts) if pretrain_texts is not None else texts
    else:
        pretrain_texts = None  # unused, so it must not change the fingerprint
    fingerprint = _fingerprint(config, texts, seed, pretrain_texts)
    if is_complete_build(out_dir, fingerprint):
        return out_dir

    started = time.perf_counter()
    tokenizer = train_tokenizer(texts, vocab_size=config.vocab_size)
    tokenizer.model_max_length = config.max_positions
    model = build_model(
        config.arch,
        tokenizer,
        hidden_size=config.hidden_size,
        num_layers=config.num_layers,
        num_heads=config.num_heads,
        max_positions=config.max_positions,
        seed=seed,
    )
    losses: list[float] = []
    if pretrain_texts is not None:
        losses = pretrain_causal_lm(
            model,
            tokenizer,
            pretrain_texts,
            steps=config.pretrain_steps,
            seed=seed,
            max_length=min(256, config.max_positions),
            progress=progress,
        )
    record = {
        "fingerprint": fingerprint,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tokenizer),
        "pretrain_losses": losses,
        "build_seconds": round(time.perf_counter() - started, 3),
    }
    _save_atomically(model, tokenizer, record, out_dir)
    return out_dir


def _save_atomically(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, record: dict, out_dir: Path
) -> None:
    """Save into a temporary sibling directory, then swap it in with renames."""
    with atomic_directory(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        # Written last: its presence marks the directory complete.
        (tmp / BUILD_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")

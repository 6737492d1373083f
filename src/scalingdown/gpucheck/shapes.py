"""Model shapes for the GPU check, the random-weight build, and a tokenizer that covers every id.

The shapes are those of the Hub models a real study uses (configs/gsm8k.yaml): Qwen2.5-0.5B as the
student, Qwen2.5-1.5B as the teacher; `smoke` is a two-layer model of the same architecture for the
CPU run. Speed depends on the shape, not on the weights, so random weights measure what the real
models would, without a download.

The models are built as Llama models with Qwen2's biases on the attention projections
(`attention_bias=True`, which also gives the output projection a bias: 0.004% more parameters).
Qwen2 and Llama compute the same thing otherwise, and vLLM and transformers run both with the same
kernels; the Llama type is used because transformers 5 ties a `qwen2` model directory to its BPE
tokenizer class, which cannot load the word-level tokenizer below.

The tokenizer is a word-level vocabulary "t3", "t4", ... with one word per model id, so a prompt of
k words is exactly k tokens and any id the random model generates decodes to text (a trained BPE
would leave most of a 151,936-id vocabulary without a token).
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast

from scalingdown.artifacts import atomic_directory

SPECIALS = ("<unk>", "<pad>", "<eos>")
BUILD_RECORD = "gpu_check_build.json"


@dataclass(frozen=True)
class ModelShape:
    """A Qwen2-architecture shape: what a config needs to build a model of that size."""

    name: str
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int
    max_position_embeddings: int = 4096

    def config(self) -> LlamaConfig:
        return LlamaConfig(
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            num_key_value_heads=self.num_key_value_heads,
            vocab_size=self.vocab_size,
            max_position_embeddings=self.max_position_embeddings,
            tie_word_embeddings=True,
            attention_bias=True,
            rope_theta=1_000_000.0,
            rms_norm_eps=1e-6,
            pad_token_id=SPECIALS.index("<pad>"),
            eos_token_id=SPECIALS.index("<eos>"),
            bos_token_id=None,
        )


SHAPES = {
    # Hidden sizes, layers, heads and vocabulary as in the Hub configs of Qwen/Qwen2.5-0.5B and -1.5B.
    "qwen2.5-0.5b": ModelShape("qwen2.5-0.5b", 896, 4864, 24, 14, 2, 151_936),
    "qwen2.5-1.5b": ModelShape("qwen2.5-1.5b", 1536, 8960, 28, 12, 2, 151_936),
    "smoke": ModelShape("smoke", 64, 128, 2, 4, 2, 1024, max_position_embeddings=512),
}


def word_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    """A tokenizer whose ids 0..vocab_size-1 are the specials then the words "t3".."t{vocab_size-1}"."""
    vocab = {token: i for i, token in enumerate(SPECIALS)}
    vocab.update({f"t{i}": i for i in range(len(SPECIALS), vocab_size)})
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>", eos_token="<eos>"
    )


def random_prompts(n: int, length: int, vocab_size: int, *, seed: int = 0) -> list[str]:
    """`n` prompts of exactly `length` tokens of `word_tokenizer(vocab_size)`, no special tokens."""
    rng = random.Random(seed)
    low = len(SPECIALS)
    return [" ".join(f"t{rng.randrange(low, vocab_size)}" for _ in range(length)) for _ in range(n)]


def count_parameters(shape: ModelShape) -> int:
    """Parameters of a model of this shape, counted on the meta device (no memory, no time)."""
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(shape.config())
    return sum(p.numel() for p in model.parameters())


def build_random_model(shape: ModelShape, out_dir: Path, *, device: torch.device, dtype: torch.dtype) -> Path:
    """Save a `shape` model with random weights (seeded) and its word tokenizer to `out_dir`.

    Built on `device` (a 1.5B model initialises in seconds on a GPU, minutes on a CPU) and saved in
    `dtype`. A directory already built with the same shape and dtype is reused.
    """
    record = {"shape": asdict(shape), "dtype": str(dtype).removeprefix("torch.")}
    done = out_dir / BUILD_RECORD
    if done.is_file() and json.loads(done.read_text()) == record:
        return out_dir
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(shape.config(), dtype=dtype)
    with atomic_directory(out_dir) as tmp:
        model.save_pretrained(tmp)
        word_tokenizer(shape.vocab_size).save_pretrained(tmp)
        (tmp / BUILD_RECORD).write_text(json.dumps(record, indent=2))
    del model
    return out_dir

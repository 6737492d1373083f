"""A tiny Llama written as a GGUF file the way llama.cpp's converter lays one out, for the GGUF tests.

The layout is what transformers' GGUF reader expects back: `llama.*` hyperparameters, llama.cpp
tensor names (`token_embd`, `blk.N.attn_q`, ...; found with gguf's own name map), the query and key
rows permuted as llama.cpp permutes them for its rotary embedding (the reader undoes it), no
`output.weight` (tied embeddings), and a byte-level BPE tokenizer as `tokenizer.ggml.model = gpt2`
with its tokens, merges, token types (the special tokens as CONTROL), special ids and chat template.
Tensors are float32, so the file holds the model's weights exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from scalingdown.models.tiny import train_tokenizer
from tests.models.test_pretrain import addition_texts

CHAT_TEMPLATE = (
    "{% for message in messages %}<s>{{ message['role'] }}\n{{ message['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant\n{% endif %}"
)


def tiny_llama(seed: int = 0) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """A 2-layer Llama of width 32 with grouped-query attention (4 query heads, 2 key/value heads),
    weights drawn large enough that attention is sharp (so a wrong q/k layout shows in the logits)."""
    tokenizer = train_tokenizer(addition_texts(100), vocab_size=300)
    tokenizer.chat_template = CHAT_TEMPLATE
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        rms_norm_eps=1e-5,
        initializer_range=0.3,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model.eval(), tokenizer


def _permute(weights: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's layout of q/k rows: each head's rotary halves interleaved (convert_hf_to_gguf.py)."""
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def write_gguf(
    path: Path,
    model: LlamaForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    *,
    architecture: str = "llama",
    chat_template: str | None = CHAT_TEMPLATE,
) -> Path:
    """Write `model` and `tokenizer` as a GGUF file at `path` (F32 tensors); returns `path`."""
    import gguf

    config = model.config
    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_name("tiny llama")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_dimension_count(config.hidden_size // config.num_attention_heads)
    writer.add_rope_freq_base(float(config.rope_parameters["rope_theta"]))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)

    backend = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    tokens = [""] * len(backend["vocab"])
    for token, index in backend["vocab"].items():
        tokens[index] = token
    special = set(tokenizer.all_special_tokens)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types(
        [gguf.TokenType.CONTROL if t in special else gguf.TokenType.NORMAL for t in tokens]
    )
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in backend["merges"]])
    writer.add_bos_token_id(tokenizer.bos_token_id)
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_unk_token_id(tokenizer.unk_token_id)
    writer.add_pad_token_id(tokenizer.pad_token_id)
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)
    if chat_template is not None:
        writer.add_chat_template(chat_template)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight":  # tied to token_embd: a GGUF without output.weight says so
            continue
        module, suffix = name.rsplit(".", 1)
        gguf_name = f"{names.get_name(module)}.{suffix}"
        weights = tensor.detach().float().numpy()
        if gguf_name.endswith("attn_q.weight"):
            weights = _permute(weights, config.num_attention_heads)
        elif gguf_name.endswith("attn_k.weight"):
            weights = _permute(weights, config.num_key_value_heads)
        writer.add_tensor(gguf_name, np.ascontiguousarray(weights))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path

"""The chunked cross-entropy over target positions (issue 12, item 5) against the plain path: on
seeded tensors (the loop reference of test_objective), and through tiny real models (Llama with LoRA
and fully trained, GPT-2, Gemma 2 with its logit cap, T5 falling back): the same example losses and
the same parameter gradients, and no (tokens x vocab) tensor kept for the backward pass."""

from __future__ import annotations

import pytest
import torch

from scalingdown.train.chunked_loss import (
    StudentLoss,
    chunk_positions,
    chunked_example_losses,
    why_full_logits,
)
from scalingdown.train.objective import IGNORE_INDEX, example_losses
from scalingdown.train.white_box import _target_logits
from tests.train.test_objective import reference_token_losses, seeded_batch

pytestmark = pytest.mark.usefixtures("one_torch_thread")

VOCAB = 96


def seeded_hidden(seed: int = 0, batch: int = 4, length: int = 7, width: int = 5, vocab: int = 11):
    """Hidden states (B, T, H), a head weight (V, H) and seeded_batch's labels (B, T)."""
    g = torch.Generator().manual_seed(seed + 100)
    hidden = torch.randn(batch, length, width, generator=g)
    weight = torch.randn(vocab, width, generator=g)
    _, labels = seeded_batch(seed, batch, length, vocab)
    return hidden, weight, labels


@pytest.mark.parametrize("shift", [True, False])
@pytest.mark.parametrize("chunk_size", [1, 3, 1000])
def test_chunked_losses_match_the_loop_reference_and_example_losses(shift, chunk_size):
    hidden, weight, labels = seeded_hidden()
    got = chunked_example_losses(hidden, labels, lambda h: h @ weight.T, shift=shift, chunk_size=chunk_size)
    logits = hidden @ weight.T
    torch.testing.assert_close(got, example_losses(logits, labels, shift=shift), rtol=1e-6, atol=1e-7)
    per_token = reference_token_losses(logits, labels, shift)
    counts = (labels[:, 1:] if shift else labels).ne(IGNORE_INDEX).sum(dim=1).clamp(min=1)
    torch.testing.assert_close(got, per_token.sum(dim=1) / counts, rtol=1e-5, atol=1e-6)
    assert got[3] == 0  # seeded_batch's last example has no target


@pytest.mark.parametrize("shift", [True, False])
def test_chunked_gradients_match_the_full_logits_path(shift):
    hidden, weight, labels = seeded_hidden(seed=1)
    scale = torch.tensor([0.5, 2.0, 1.0, 3.0])  # per-example weights, as multitask_loss applies them
    grads = []
    for chunked in (True, False):
        h, w = hidden.clone().requires_grad_(True), weight.clone().requires_grad_(True)
        if chunked:
            losses = chunked_example_losses(h, labels, lambda x, w=w: x @ w.T, shift=shift, chunk_size=2)
        else:
            losses = example_losses(h @ w.T, labels, shift=shift)
        (losses * scale).sum().backward()
        grads.append((h.grad, w.grad))
    for got, expected in zip(*grads, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert torch.all(grads[0][0][3] == 0)  # the example without targets learns nothing


def test_a_batch_without_targets_gives_zeros_that_backpropagate():
    hidden, weight, labels = seeded_hidden(seed=2)
    hidden.requires_grad_(True)
    labels[:] = IGNORE_INDEX
    losses = chunked_example_losses(hidden, labels, lambda h: h @ weight.T, shift=True, chunk_size=4)
    assert torch.all(losses == 0)
    losses.sum().backward()
    assert torch.all(hidden.grad == 0)


def test_chunks_hold_a_fixed_number_of_logits_whatever_the_vocabulary():
    assert chunk_positions(49_152) == 682  # SmolLM2
    assert chunk_positions(151_936) == 220  # Qwen2.5
    assert chunk_positions(10**9) == 64  # never fewer positions than that
    with pytest.raises(ValueError, match="chunk_size"):
        chunked_example_losses(*seeded_hidden()[::2], lambda h: h, shift=True, chunk_size=0)


def tiny(arch: str, **extra):
    """A tiny model of `arch` built from a config (no tokenizer needed), seeded, float32."""
    import transformers as tf

    torch.manual_seed(0)
    if arch == "llama":
        config = tf.LlamaConfig(
            vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64, **extra,
        )  # fmt: skip
        return tf.LlamaForCausalLM(config)
    if arch == "gpt2":
        config = tf.GPT2Config(
            vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=2, n_positions=64, bos_token_id=0, eos_token_id=0,
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,  # two forward passes must match
        )  # fmt: skip
        return tf.GPT2LMHeadModel(config)
    if arch == "gemma2":
        config = tf.Gemma2Config(
            vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, head_dim=16,
            num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
            final_logit_softcapping=3.0,
        )  # fmt: skip
        return tf.Gemma2ForCausalLM(config)
    config = tf.T5Config(
        vocab_size=VOCAB, d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2, decoder_start_token_id=0
    )
    return tf.T5ForConditionalGeneration(config)


def with_lora(model):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(1)
    config = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
    return get_peft_model(model, config)


def token_batch(seed: int = 0, batch: int = 3, length: int = 12) -> dict[str, torch.Tensor]:
    """Right-padded rows with a prompt (-100) before their targets, as `collate` makes them."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (batch, length), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0  # padding
    labels = ids.masked_fill(mask == 0, IGNORE_INDEX)
    labels[:, :4] = IGNORE_INDEX  # prompts
    labels[2, :7] = IGNORE_INDEX
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def losses_and_grads(model, loss: StudentLoss, batch):
    model.zero_grad()
    per_example, student_logits = loss(model, batch)
    (per_example * torch.tensor([1.0, 2.0, 0.5])).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return per_example.detach(), grads, student_logits


@pytest.mark.parametrize(
    ("arch", "lora"), [("llama", True), ("llama", False), ("gpt2", True), ("gemma2", False)]
)
def test_a_tiny_model_gets_the_same_losses_and_gradients_as_with_full_logits(arch, lora):
    model = tiny(arch)
    model = with_lora(model) if lora else model
    model.train()
    batch = token_batch()
    chunked = StudentLoss(model, is_seq2seq=False, chunk_size=5)  # several chunks per batch
    assert chunked.chunked, chunked.full_logits_because
    got, got_grads, rows_logits = losses_and_grads(model, chunked, batch)
    expected, expected_grads, logits = losses_and_grads(
        model, StudentLoss(model, is_seq2seq=False, chunked=False), batch
    )
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert set(got_grads) == set(expected_grads) and got_grads
    for name, grad in got_grads.items():
        torch.testing.assert_close(grad, expected_grads[name], rtol=1e-5, atol=1e-6, msg=name)
    # The white-box term's rows: the same logits as cut from the full ones.
    rows = torch.tensor([True, False, True])
    torch.testing.assert_close(
        rows_logits(rows),
        _target_logits(logits[rows], batch["labels"][rows], shift=True),
        rtol=1e-5,
        atol=1e-5,
    )


def test_a_seq2seq_student_keeps_the_full_logits_path():
    model = with_lora(tiny("t5")).train()
    loss = StudentLoss(model, is_seq2seq=True)
    assert not loss.chunked and loss.full_logits_because == "a seq2seq student"
    batch = token_batch()
    per_example, logits = loss(model, batch)
    assert logits.shape == (3, 12, VOCAB)
    torch.testing.assert_close(per_example, example_losses(logits, batch["labels"], shift=False))


def test_a_head_that_is_not_the_output_embeddings_alone_falls_back_with_a_warning():
    # Llama ignores final_logit_softcapping, so the chunked path's cap would change its logits.
    model = tiny("llama", final_logit_softcapping=0.5).train()
    loss = StudentLoss(model, is_seq2seq=False)
    assert why_full_logits(model, is_seq2seq=False) is None and loss.chunked
    batch = token_batch(seed=3)
    with pytest.warns(UserWarning, match="training on full logits"):
        per_example, logits = loss(model, batch)
    assert not loss.chunked and logits.shape == (3, 12, VOCAB)
    plain = StudentLoss(model, is_seq2seq=False, chunked=False)
    torch.testing.assert_close(per_example, plain(model, batch)[0])


def saved_for_backward(loss: StudentLoss, model, batch) -> list[tuple[torch.Size, int]]:
    """(shape, elements of its memory) of each tensor autograd keeps between the forward and the
    backward pass (an expanded view shares a small memory: the head weight broadcast over rows)."""
    saved = []

    def pack(tensor):
        saved.append((tensor.shape, tensor.untyped_storage().nbytes() // tensor.element_size()))
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        per_example, _ = loss(model, batch)
    per_example.sum().backward()
    return saved


def test_no_tensor_of_every_position_by_the_vocabulary_lives_until_the_backward_pass():
    model = with_lora(tiny("llama")).train()
    batch = token_batch()
    positions = batch["input_ids"].numel()  # 36; the batch has 18 target positions

    def largest_vocab_tensor(loss):
        saved = saved_for_backward(loss, model, batch)
        return max((size for shape, size in saved if shape and shape[-1] == VOCAB), default=0)

    full = largest_vocab_tensor(StudentLoss(model, is_seq2seq=False, chunked=False))
    assert full >= (positions - 3) * VOCAB  # the plain path keeps (B x (T-1), V) for its backward
    chunked = largest_vocab_tensor(StudentLoss(model, is_seq2seq=False, chunk_size=5))
    # What is left: the head's weight (V, H), and the model's own last-position logits (B, 1, V).
    assert chunked <= max(3, 32) * VOCAB


@pytest.mark.parametrize("lora", [True, False])
def test_under_mixed_precision_the_head_runs_in_the_forward_pass_autocast(lora):
    # Accelerate's bf16: the model's forward wrapped in autocast, its outputs cast back to float32
    # (as `Accelerator.prepare` does it). The chunked head runs outside that forward, so StudentLoss
    # must enter the same autocast (else its logits would be float32, twice the memory).
    from types import MethodType

    from accelerate.utils import convert_outputs_to_fp32

    model = tiny("llama")
    model = (with_lora(model) if lora else model).train()
    forward = torch.autocast("cpu", dtype=torch.bfloat16)(model.forward.__func__)
    model.forward = MethodType(convert_outputs_to_fp32(forward), model)
    batch = token_batch(seed=4)
    loss = StudentLoss(model, is_seq2seq=False, autocast=lambda: torch.autocast("cpu", dtype=torch.bfloat16))
    assert loss.chunked  # the wrapped forward still shows its logits_to_keep
    dtypes = []
    loss.head.register_forward_hook(lambda _m, _a, out: dtypes.append(out.dtype))
    got, _ = loss(model, batch)
    assert loss.chunked  # bf16 rounding does not fail the check of the head
    assert set(dtypes) == {torch.bfloat16}
    expected, _ = StudentLoss(model, is_seq2seq=False, chunked=False)(model, batch)
    torch.testing.assert_close(got, expected, rtol=2e-2, atol=1e-2)

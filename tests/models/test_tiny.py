"""Tiny-model factory: tokenizer, model builds, saving, reuse of an existing build."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

from scalingdown.config import TinyModelConfig
from scalingdown.errors import UserError
from scalingdown.models.loading import load_model
from scalingdown.models.tiny import BUILD_RECORD, build_model, build_tiny, train_tokenizer
from tests.models.test_pretrain import addition_texts

ARCHS = ["llama", "gpt2", "t5"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def read_gsm8k(path: Path, limit: int) -> list[dict]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in itertools.islice(handle, limit)]


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(addition_texts(), vocab_size=300)


def test_tokenizer_round_trips_real_gsm8k_text(gsm8k_dir):
    train = read_gsm8k(gsm8k_dir / "train.jsonl", 300)
    tokenizer = train_tokenizer((row["question"] + "\n" + row["answer"] for row in train), vocab_size=512)
    assert len(tokenizer) == 512
    # Unseen text: the test split, plus characters the training text never had.
    test = read_gsm8k(gsm8k_dir / "test.jsonl", 200)
    samples = [row["question"] for row in test] + [row["answer"] for row in test]
    samples += [
        "Zoë paid €3.50 — 20% off — for 日本茶 🍵\n\n\tdone  ",
        "",
        " ",
        "\n#### 1,234",
        "a , b . c ? I 'm",
    ]
    assert any("$" in s for s in samples) and any("%" in s for s in samples)
    assert any("\n" in s for s in samples) and any(not s.isascii() for s in samples)
    for text in samples:
        ids = tokenizer(text)["input_ids"]
        assert tokenizer.decode(ids) == text
    # BPE has learned something: real text takes far fewer tokens than bytes.
    question = test[0]["question"]
    assert len(tokenizer(question)["input_ids"]) < 0.6 * len(question.encode("utf-8"))


def test_digits_are_single_tokens(tokenizer):
    for digit in "0123456789":
        assert tokenizer.convert_ids_to_tokens(tokenizer(digit)["input_ids"]) == [digit]
    tokens = tokenizer.convert_ids_to_tokens(tokenizer("costs $12045.")["input_ids"])
    assert [t for t in tokens if any(c.isdigit() for c in t)] == list("12045")


def test_special_tokens_are_set_and_not_added_to_plain_text(tokenizer):
    specials = {tokenizer.pad_token: "<pad>", tokenizer.bos_token: "<s>", tokenizer.eos_token: "</s>"}
    assert all(token == expected for token, expected in specials.items())
    assert tokenizer.unk_token == "<unk>"
    ids = {tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id}
    assert len(ids) == 4 and None not in ids
    # Training appends eos itself; a plain encode adds nothing, so prompts and training texts agree.
    assert not ids & set(tokenizer("Question: 1 + 2 = ?")["input_ids"])
    assert tokenizer("a</s>")["input_ids"][-1] == tokenizer.eos_token_id


def test_vocab_smaller_than_the_byte_alphabet_is_refused():
    with pytest.raises(UserError, match="vocab_size"):
        train_tokenizer(["abc"], vocab_size=128)


@pytest.mark.parametrize("arch", ARCHS)
def test_build_model_is_seeded_and_sized_from_the_tokenizer(arch, tokenizer):
    model = build_model(arch, tokenizer, hidden_size=32, num_layers=2, num_heads=4, seed=7)
    same = build_model(arch, tokenizer, hidden_size=32, num_layers=2, num_heads=4, seed=7)
    other = build_model(arch, tokenizer, hidden_size=32, num_layers=2, num_heads=4, seed=8)
    state, state_same, state_other = model.state_dict(), same.state_dict(), other.state_dict()
    assert all(torch.equal(state[k], state_same[k]) for k in state)
    assert any(not torch.equal(state[k], state_other[k]) for k in state)

    config = model.config
    assert config.vocab_size == len(tokenizer)
    assert model.get_input_embeddings().weight.shape == (len(tokenizer), 32)
    assert config.pad_token_id == tokenizer.pad_token_id
    assert config.eos_token_id == tokenizer.eos_token_id
    assert config.is_encoder_decoder == (arch == "t5")
    if arch == "t5":
        assert config.decoder_start_token_id == tokenizer.pad_token_id


def test_build_model_rejects_bad_shapes(tokenizer):
    with pytest.raises(UserError, match="num_heads"):
        build_model("llama", tokenizer, hidden_size=30, num_heads=4)
    with pytest.raises(UserError, match="arch"):
        build_model("mamba", tokenizer)


@pytest.mark.parametrize("arch", ARCHS)
def test_build_tiny_saves_a_model_that_loads_like_a_hub_model(arch, tmp_path):
    texts = addition_texts(100)
    config = TinyModelConfig(arch=arch, hidden_size=32, vocab_size=300, max_positions=128)
    out = build_tiny(config, texts, tmp_path / "model", seed=0, progress=False)
    assert out == tmp_path / "model"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no temporary directory left behind

    auto_class = AutoModelForSeq2SeqLM if arch == "t5" else AutoModelForCausalLM
    model = auto_class.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.decode(tokenizer(texts[0])["input_ids"]) == texts[0]
    assert tokenizer.model_max_length == 128

    loaded = load_model(str(out), device="cpu")
    assert loaded.is_seq2seq == (arch == "t5")
    assert loaded.num_parameters == sum(p.numel() for p in model.parameters())
    record = json.loads((out / BUILD_RECORD).read_text())
    assert record["num_parameters"] == loaded.num_parameters
    fresh = dict(model.named_parameters())
    assert all(torch.equal(fresh[name], p) for name, p in loaded.model.named_parameters())

    batch = loaded.tokenizer(
        ["Question: 3 + 4 = ?\nAnswer:", "Question: 1"], return_tensors="pt", padding=True
    )
    out_ids = loaded.model.generate(**batch, max_new_tokens=4, do_sample=False)
    new_tokens = out_ids.shape[1] - (0 if arch == "t5" else batch["input_ids"].shape[1])
    assert out_ids.shape[0] == 2 and 1 <= new_tokens <= 5


def test_build_tiny_reuses_a_matching_build_and_rebuilds_otherwise(tmp_path):
    texts = addition_texts(50)
    config = TinyModelConfig(arch="gpt2", hidden_size=16, num_heads=2, vocab_size=280)
    out = build_tiny(config, texts, tmp_path / "m", seed=0, progress=False)
    weights = out / "model.safetensors"
    first = weights.stat().st_mtime_ns
    first_bytes = weights.read_bytes()

    build_tiny(config, texts, out, seed=0, progress=False)
    assert weights.stat().st_mtime_ns == first  # untouched: reused

    build_tiny(config, texts, out, seed=1, progress=False)  # another seed: rebuilt, other weights
    assert weights.read_bytes() != first_bytes
    assert json.loads((out / BUILD_RECORD).read_text())["fingerprint"]["seed"] == 1

    rebuilt = weights.stat().st_mtime_ns
    build_tiny(config, texts[:-1], out, seed=1, progress=False)  # other data: rebuilt
    assert weights.stat().st_mtime_ns != rebuilt

    # A directory without its build record is incomplete, never reused.
    (out / BUILD_RECORD).unlink()
    build_tiny(config, texts[:-1], out, seed=1, progress=False)
    assert (out / BUILD_RECORD).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_build_tiny_pretrains_when_asked(tmp_path):
    texts = addition_texts(60)
    plain = TinyModelConfig(arch="llama", hidden_size=32, vocab_size=300)
    trained = plain.model_copy(update={"pretrain_steps": 12})
    build_tiny(plain, texts, tmp_path / "plain", seed=0, progress=False)
    build_tiny(trained, texts, tmp_path / "trained", seed=0, pretrain_texts=texts[:30], progress=False)

    record = json.loads((tmp_path / "trained" / BUILD_RECORD).read_text())
    assert len(record["pretrain_losses"]) == 12
    assert record["fingerprint"]["pretrain_texts_sha256"] is not None
    before = load_model(str(tmp_path / "plain"), device="cpu").model.state_dict()
    after = load_model(str(tmp_path / "trained"), device="cpu").model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_build_tiny_needs_texts(tmp_path):
    with pytest.raises(UserError, match="no texts"):
        build_tiny(TinyModelConfig(), [], tmp_path / "m", seed=0)

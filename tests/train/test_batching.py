"""Tokenisation with prompt masking, length-grouped batches and collation, with real tokenizers."""

from __future__ import annotations

import copy
from collections import Counter

import pytest
import torch
from tokenizers.processors import TemplateProcessing
from transformers import PreTrainedTokenizerFast

from scalingdown.data.gsm8k import load_gsm8k
from scalingdown.errors import UserError
from scalingdown.evaluate.prompts import worked_example
from scalingdown.models.tiny import SPECIAL_TOKENS, train_tokenizer
from scalingdown.train.batching import (
    collate,
    length_grouped_batches,
    padding_share,
    random_batches,
    tokenize_examples,
)
from scalingdown.train.examples import TrainExample, build_examples
from scalingdown.train.objective import IGNORE_INDEX, task_index, task_weights

TEXTS = [
    "Question: Tom has 3 apples and buys 4 more. How many apples does he have?\nAnswer: 3 + 4 = 7. "
    "The answer is 7.",
    "Explain like big would.\nQuestion: A car goes 60 km in 2 hours. What is its speed?\nRationale: "
    "60 / 2 = 30. The answer is 30.",
] * 20
EXAMPLES = [
    TrainExample(
        "p-0", "answer", "Question: Tom has 3 apples and buys 4 more. How many?\nAnswer:", " The answer is 7."
    ),
    TrainExample(
        "p-0",
        "rationale:big",
        "Explain like big would.\nQuestion: Tom has 3 apples and buys 4 more. How many?\nRationale:",
        " 3 + 4 = 7.\nThe answer is 7.",
    ),
    TrainExample("p-1", "answer", "Question: What is 2 + 2?\nAnswer:", " The answer is 4."),
]
TASKS = {"answer": 0, "rationale:big": 1}


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    return train_tokenizer(TEXTS, vocab_size=300)


def with_template(tokenizer: PreTrainedTokenizerFast, template: str) -> PreTrainedTokenizerFast:
    """The tiny tokenizer with special tokens added the way Llama (BOS first) or T5 (EOS last) add them."""
    backend = copy.deepcopy(tokenizer.backend_tokenizer)
    ids = {tok: backend.token_to_id(tok) for tok in ("<s>", "</s>")}
    backend.post_processor = TemplateProcessing(
        single=template, special_tokens=[(t, i) for t, i in ids.items() if t in template]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, clean_up_tokenization_spaces=False, **SPECIAL_TOKENS
    )


def learnt(feature: dict) -> list[int]:
    return [t for t in feature["labels"] if t != IGNORE_INDEX]


@pytest.mark.parametrize("template", [None, "<s> $A"])
def test_causal_features_learn_exactly_target_and_eos(tokenizer, template):
    tok = with_template(tokenizer, template) if template else tokenizer
    features = tokenize_examples(EXAMPLES, tok, max_length=128, is_seq2seq=False, task_index=TASKS)
    for example, feature in zip(EXAMPLES, features, strict=True):
        prompt_ids = tok(example.prompt)["input_ids"]
        assert feature["input_ids"][: len(prompt_ids)] == prompt_ids  # the prompt as evaluation encodes it
        assert tok.decode(learnt(feature)) == example.target + "</s>"
        assert feature["labels"][: len(prompt_ids)] == [IGNORE_INDEX] * len(prompt_ids)
        assert feature["labels"][len(prompt_ids) :] == feature["input_ids"][len(prompt_ids) :]
        assert feature["length"] == len(feature["input_ids"]) == len(feature["labels"])
        assert feature["task"] == TASKS[example.task] and not feature["truncated"]
    assert tok.decode(features[0]["input_ids"]) == (
        ("<s>" if template else "") + EXAMPLES[0].prompt + EXAMPLES[0].target + "</s>"
    )


def test_seq2seq_features_put_the_prompt_in_the_encoder(tokenizer):
    tok = with_template(tokenizer, "$A </s>")  # T5 closes its input with eos
    features = tokenize_examples(EXAMPLES, tok, max_length=128, is_seq2seq=True, task_index=TASKS)
    for example, feature in zip(EXAMPLES, features, strict=True):
        assert tok.decode(feature["input_ids"]) == example.prompt + "</s>"
        assert tok.decode(feature["labels"]) == example.target + "</s>"
        assert feature["length"] == len(feature["input_ids"]) + len(feature["labels"])


@pytest.mark.parametrize(("is_seq2seq", "template"), [(False, "<s> $A"), (True, "$A </s>")])
def test_truncation_cuts_the_prompt_from_the_left_and_keeps_the_target(tokenizer, is_seq2seq, template):
    tok = with_template(tokenizer, template)
    example = EXAMPLES[1]
    full = tokenize_examples([example], tok, max_length=512, is_seq2seq=is_seq2seq, task_index=TASKS)[0]
    target_len = len(learnt(full))
    limit = (len(full["input_ids"]) - 6) if is_seq2seq else target_len + 8
    cut = tokenize_examples([example], tok, max_length=limit, is_seq2seq=is_seq2seq, task_index=TASKS)[0]
    assert cut["truncated"]
    assert learnt(cut) == learnt(full)  # the whole target survives
    special = full["input_ids"][0] if not is_seq2seq else full["input_ids"][-1]
    if is_seq2seq:
        assert len(cut["input_ids"]) == limit and cut["input_ids"][-1] == special
        assert cut["input_ids"][:-1] == full["input_ids"][-limit:-1]  # the prompt's end is kept
    else:
        assert len(cut["input_ids"]) == limit and cut["input_ids"][0] == special  # BOS kept
        assert cut["input_ids"][1:] == full["input_ids"][-(limit - 1) :]


def test_a_target_longer_than_max_length_is_cut_not_dropped(tokenizer):
    long = TrainExample("p-9", "answer", "Question: Why?\nAnswer:", " 1 + 1 = 2." * 40)
    feature = tokenize_examples([long], tokenizer, max_length=20, is_seq2seq=False, task_index=TASKS)[0]
    assert len(feature["input_ids"]) == 20 and feature["truncated"]
    assert all(label != IGNORE_INDEX for label in feature["labels"])  # all room went to the target
    assert tokenizer.decode(learnt(feature)) == tokenizer.decode(tokenizer(long.target)["input_ids"][:20])
    bos_first = with_template(tokenizer, "<s> $A")
    with pytest.raises(UserError, match="max_length: 1 tokens leave no room"):
        tokenize_examples([long], bos_first, max_length=1, is_seq2seq=False, task_index=TASKS)


def test_unknown_task_and_missing_eos_are_refused(tokenizer):
    with pytest.raises(ValueError, match="rationale:big"):
        tokenize_examples(EXAMPLES, tokenizer, max_length=64, is_seq2seq=False, task_index={"answer": 0})
    no_eos = copy.deepcopy(tokenizer)
    no_eos.eos_token = None
    with pytest.raises(UserError, match="no eos token"):
        tokenize_examples(EXAMPLES, no_eos, max_length=64, is_seq2seq=False, task_index=TASKS)


def test_collate_pads_right_with_the_right_values(tokenizer):
    features = tokenize_examples(EXAMPLES, tokenizer, max_length=128, is_seq2seq=False, task_index=TASKS)
    batch = collate(features, pad_id=tokenizer.pad_token_id, is_seq2seq=False)
    width = max(len(f["input_ids"]) for f in features)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape == (3, width)
    assert batch["task"].tolist() == [0, 1, 0]
    for row, feature in enumerate(features):
        n = len(feature["input_ids"])
        assert batch["input_ids"][row, :n].tolist() == feature["input_ids"]
        assert torch.all(batch["input_ids"][row, n:] == tokenizer.pad_token_id)
        assert batch["attention_mask"][row].tolist() == [1] * n + [0] * (width - n)
        assert batch["labels"][row, :n].tolist() == feature["labels"]
        assert torch.all(batch["labels"][row, n:] == IGNORE_INDEX)
    rounded = collate(features, pad_id=0, is_seq2seq=False, pad_to_multiple_of=8)
    assert rounded["input_ids"].shape[1] % 8 == 0 and rounded["input_ids"].shape[1] >= width


def test_collate_seq2seq_pads_each_side_to_its_own_width(tokenizer):
    features = tokenize_examples(EXAMPLES, tokenizer, max_length=128, is_seq2seq=True, task_index=TASKS)
    batch = collate(features, pad_id=tokenizer.pad_token_id, is_seq2seq=True)
    assert batch["input_ids"].shape == (3, max(len(f["input_ids"]) for f in features))
    assert batch["labels"].shape == (3, max(len(f["labels"]) for f in features))
    for row, feature in enumerate(features):
        n = len(feature["labels"])
        assert batch["labels"][row, :n].tolist() == feature["labels"]
        assert torch.all(batch["labels"][row, n:] == IGNORE_INDEX)


LENGTHS = [((i * 37) % 101) + 3 for i in range(1003)]


@pytest.mark.parametrize("batch_size", [1, 8, 13])
def test_every_index_exactly_once(batch_size):
    for batches in (
        length_grouped_batches(LENGTHS, batch_size, seed=3, epoch=1, mega_batch_mult=4),
        random_batches(len(LENGTHS), batch_size, seed=3, epoch=1),
    ):
        flat = [i for batch in batches for i in batch]
        assert sorted(flat) == list(range(len(LENGTHS)))
        assert all(len(b) == batch_size for b in batches[:-1]) or batch_size == 1
        assert all(0 < len(b) <= batch_size for b in batches)


def test_grouping_is_deterministic_differs_by_epoch_and_puts_the_longest_first():
    first = length_grouped_batches(LENGTHS, 8, seed=0, epoch=0)
    assert first == length_grouped_batches(LENGTHS, 8, seed=0, epoch=0)
    assert first != length_grouped_batches(LENGTHS, 8, seed=0, epoch=1)
    assert random_batches(50, 8, seed=0, epoch=2) == random_batches(50, 8, seed=0, epoch=2)
    assert max(LENGTHS) in [LENGTHS[i] for i in first[0]]
    # within a mega-batch (50 x 8 here), batches run from long to short
    maxima = [max(LENGTHS[i] for i in b) for b in first[1:50]]
    assert maxima == sorted(maxima, reverse=True)


def test_padding_share_counts_padding():
    assert padding_share([[0, 1], [2]], [4, 2, 5]) == pytest.approx(1 - 11 / 13)
    assert padding_share([[0, 1]], [3, 3]) == 0


def gsm8k_lengths(gsm8k_dir, fmt: str) -> list[int]:
    """Token lengths of GSM8K train examples (gold rationales standing in for one teacher)."""
    problems = load_gsm8k("train", gsm8k_dir)
    tok = train_tokenizer([worked_example(p) for p in problems[:2000]], vocab_size=2048)
    rationales = {"gold": [{"problem_id": p.id, "text": p.rationale} for p in problems]}
    examples = build_examples(problems, rationales, fmt=fmt, counts=Counter())
    index = task_index(task_weights(fmt, ["gold"]))
    features = tokenize_examples(examples, tok, max_length=512, is_seq2seq=False, task_index=index)
    return [f["length"] for f in features]


@pytest.mark.parametrize("fmt", ["multitask", "single"])
def test_length_grouping_cuts_padding_on_gsm8k(gsm8k_dir, fmt):
    lengths = gsm8k_lengths(gsm8k_dir, fmt)
    grouped = [padding_share(length_grouped_batches(lengths, 8, seed=0, epoch=e), lengths) for e in range(3)]
    shuffled = [padding_share(random_batches(len(lengths), 8, seed=0, epoch=e), lengths) for e in range(3)]
    grouped_share, random_share = sum(grouped) / 3, sum(shuffled) / 3
    print(
        f"\nGSM8K train, {fmt}, {len(lengths)} examples, batch 8: padding share "
        f"grouped {grouped_share:.1%}, random {random_share:.1%}"
    )
    assert grouped_share < 0.25 * random_share

"""`chars_per_token`: the bound holds only where it is provable, checked on real `tokenizers` pipelines."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from scalingdown.serve.tokens import chars_per_token

VOCAB = {"a": 0, "b": 1, "ab": 2, "abab": 3, "▁": 4, "<unk>": 5}


def _wrap(tokenizer: Tokenizer) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>")


def _bpe(**options) -> Tokenizer:
    merges = [("a", "b"), ("ab", "ab")]
    return Tokenizer(models.BPE(vocab=dict(VOCAB), merges=merges, unk_token="<unk>", **options))


def test_the_tiny_byte_level_tokenizer_has_a_bound_that_holds(model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    bound = chars_per_token(tokenizer)
    assert bound == max(len(token) for token in tokenizer.get_vocab())
    for text in ["Question: 12 apples?", "     ", "word " * 50, "ünïcödé 😀" * 5]:
        assert len(tokenizer(text)["input_ids"]) * bound >= len(text)


def test_byte_fallback_with_a_one_for_one_replace_has_a_bound():
    tokenizer = _bpe(byte_fallback=True)
    tokenizer.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    assert chars_per_token(_wrap(tokenizer)) == len("<unk>")


@pytest.mark.parametrize(
    "change",
    [
        lambda t: setattr(t, "normalizer", normalizers.NFC()),  # composes two characters into one
        lambda t: setattr(t, "normalizer", normalizers.Replace("  ", " ")),  # collapses spaces
        lambda t: setattr(t, "pre_tokenizer", pre_tokenizers.Whitespace()),  # drops spaces
        lambda t: None,  # no byte fallback: an unknown run may fuse into one <unk>
    ],
)
def test_no_bound_where_many_characters_can_make_one_token(change):
    tokenizer = _bpe()
    change(tokenizer)
    assert chars_per_token(_wrap(tokenizer)) is None


def test_a_word_level_tokenizer_has_no_bound():
    tokenizer = Tokenizer(models.WordLevel(vocab=dict(VOCAB), unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel()
    tokenizer.decoder = decoders.ByteLevel()
    assert chars_per_token(_wrap(tokenizer)) is None

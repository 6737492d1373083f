"""The `hf` teacher backend on a tiny real Llama: batching, sampling, chat prompts, failures, cache."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from tokenizers.processors import TemplateProcessing
from transformers import AutoTokenizer

from scalingdown.errors import UserError
from scalingdown.evaluate.prompts import zero_shot
from scalingdown.models.loading import load_model
from scalingdown.teach import Request, SamplingParams, get_backend, hf_backend
from scalingdown.teach.cache import CachedBackend, ResponseCache
from scalingdown.teach.hf_backend import HFBackend, render_prompt

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
MESSAGES = [
    {"role": "system", "content": "Solve step by step."},
    {"role": "user", "content": "Question: Ann has 3 apples and buys 4 more. How many now?"},
]


@pytest.fixture(scope="module")
def tiny_chat_dir(tmp_path_factory, tiny_dir) -> Path:
    """The same model, its tokenizer given a chat template."""
    out = tmp_path_factory.mktemp("hf-teacher-chat") / "model"
    shutil.copytree(tiny_dir, out)
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(out)
    return out


def teacher(path: Path | str, **options) -> HFBackend:
    return HFBackend({"model": str(path), "device": "cpu", **options})


def one_at_a_time(path: Path, prompts: list[str], max_new_tokens: int) -> list[str]:
    """Reference: a plain greedy `model.generate` per unpadded prompt."""
    loaded = load_model(str(path), device="cpu")
    texts = []
    for prompt in prompts:
        ids = loaded.tokenizer(prompt, return_tensors="pt")
        with torch.inference_mode():
            out = loaded.model.generate(
                **ids,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=loaded.tokenizer.pad_token_id,
            )
        texts.append(loaded.tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True))
    return texts


def test_registered_and_options_are_checked(tiny_dir):
    assert get_backend("hf") is HFBackend
    backend = HFBackend.from_options({"model": str(tiny_dir)})
    assert backend.model == str(tiny_dir) and backend.options.batch_size == 32
    assert backend.options.device == "auto" and backend.options.dtype == "auto"
    with pytest.raises(UserError, match=r"options\.batchsize"):
        HFBackend.from_options({"model": "m", "batchsize": 4})
    with pytest.raises(UserError, match=r"options\.batch_size"):
        HFBackend.from_options({"model": "m", "batch_size": 0})
    with pytest.raises(UserError, match=r"options\.device: 'gpu0' is not a device"):
        HFBackend.from_options({"model": "m", "device": "gpu0"})
    with pytest.raises(UserError, match=r"options\.model"):
        HFBackend.from_options({})


def test_greedy_batches_equal_one_prompt_at_a_time_in_order(tiny_dir, problems):
    prompts = [zero_shot(p) for p in problems[:10]]
    requests = [Request(f"q{i}", prompt) for i, prompt in enumerate(prompts)]
    reported = []
    backend = teacher(tiny_dir, batch_size=4)
    results = backend.generate(requests, SamplingParams(max_tokens=12), on_result=reported.append)

    assert [r.key for r in results] == [f"q{i}" for i in range(10)]
    assert sorted(r.key for r in reported) == sorted(r.key for r in results)  # once each
    assert len(reported) == 10
    assert [r.texts for r in results] == [[t] for t in one_at_a_time(tiny_dir, prompts, 12)]
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    for prompt, result in zip(prompts, results, strict=True):
        assert result.ok and not result.from_cache
        assert result.prompt_tokens == len(tokenizer(prompt)["input_ids"])
        assert 1 <= result.completion_tokens <= 12
    backend.close()
    assert backend._loaded is None


def test_sampling_n_completions_seeded(tiny_dir, problems):
    requests = [Request(f"q{i}", zero_shot(p)) for i, p in enumerate(problems[:5])]
    backend = teacher(tiny_dir, batch_size=2)
    params = SamplingParams(temperature=1.0, max_tokens=8, n=3, seed=7)
    first = backend.generate(requests, params)
    again = backend.generate(requests, params)
    other = backend.generate(requests, SamplingParams(temperature=1.0, max_tokens=8, n=3, seed=8))

    assert all(len(r.texts) == 3 for r in first)
    assert all(3 <= r.completion_tokens <= 24 for r in first)
    assert [r.texts for r in first] == [r.texts for r in again]  # the seed decides
    assert [r.texts for r in first] != [r.texts for r in other]
    # An untrained model at temperature 1 almost never repeats 8 tokens: the samples differ.
    assert any(len(set(r.texts)) > 1 for r in first)


def test_greedy_with_n_repeats_the_one_completion(tiny_dir, problems):
    backend = teacher(tiny_dir)
    (result,) = backend.generate([Request("q", zero_shot(problems[0]))], SamplingParams(max_tokens=6, n=2))
    assert len(result.texts) == 2 and result.texts[0] == result.texts[1]


def test_chat_without_template_is_rendered_as_role_lines(tiny_dir):
    backend = teacher(tiny_dir)
    assert not backend.has_chat_template()
    plain = "system: Solve step by step.\nuser: " + MESSAGES[1]["content"] + "\nassistant:"
    chat, text = backend.generate(
        [Request("chat", MESSAGES), Request("text", plain)], SamplingParams(max_tokens=10)
    )
    assert chat.ok and chat.texts == text.texts and chat.prompt_tokens == text.prompt_tokens


def test_chat_with_template_uses_it(tiny_chat_dir):
    backend = teacher(tiny_chat_dir)
    assert backend.has_chat_template()
    rendered = f"<|system|>\n{MESSAGES[0]['content']}\n<|user|>\n{MESSAGES[1]['content']}\n<|assistant|>\n"
    chat, text = backend.generate(
        [Request("chat", MESSAGES), Request("text", rendered)], SamplingParams(max_tokens=10)
    )
    assert chat.ok and chat.texts == text.texts and chat.prompt_tokens == text.prompt_tokens


def test_template_bos_is_not_doubled_when_the_tokenizer_adds_one(tiny_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    bos, bos_id = tokenizer.bos_token, tokenizer.bos_token_id
    tokenizer.backend_tokenizer.post_processor = TemplateProcessing(
        single=f"{bos} $A", special_tokens=[(bos, bos_id)]
    )
    tokenizer.chat_template = "{{ bos_token }}" + CHAT_TEMPLATE
    assert tokenizer("x")["input_ids"][0] == bos_id  # this tokenizer adds BOS itself
    ids = tokenizer(render_prompt(tokenizer, MESSAGES))["input_ids"]
    assert ids[0] == bos_id and ids.count(bos_id) == 1


def test_a_model_that_cannot_load_fails_every_request(tmp_path):
    missing = tmp_path / "no-such-model"
    backend = teacher(missing)
    reported = []
    requests = [Request(f"q{i}", "Question: 1+1?\nAnswer:") for i in range(3)]
    results = backend.generate(requests, SamplingParams(), on_result=reported.append)
    assert [r.key for r in results] == ["q0", "q1", "q2"] and len(reported) == 3
    assert all(not r.ok and str(missing) in r.error and r.texts == [] for r in results)
    assert len({r.error for r in results}) == 1
    assert backend.generate(requests[:1], SamplingParams())[0].error == results[0].error


def test_an_exception_in_on_result_reaches_the_caller(tiny_dir, problems):
    def explode(result):
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        teacher(tiny_dir).generate(
            [Request("q", zero_shot(problems[0]))], SamplingParams(max_tokens=3), on_result=explode
        )


def test_behind_the_cache_a_second_call_sends_nothing(tiny_dir, problems, tmp_path, monkeypatch):
    sent: list[int] = []
    engine = hf_backend.generate_texts

    def counting(loaded, prompts, settings, **kwargs):
        sent.append(len(prompts))
        return engine(loaded, prompts, settings, **kwargs)

    monkeypatch.setattr(hf_backend, "generate_texts", counting)
    requests = [Request(f"q{i}", zero_shot(p)) for i, p in enumerate(problems[:6])]
    params = SamplingParams(max_tokens=6)
    with ResponseCache(tmp_path / "cache.sqlite") as cache:
        cached = CachedBackend(teacher(tiny_dir, batch_size=4), cache)
        first = cached.generate(requests, params)
        assert sent == [6] and len(cache) == 6
        second = cached.generate(requests, params)
        assert sent == [6]  # nothing sent the second time
        assert all(r.from_cache for r in second)
        assert [r.texts for r in second] == [r.texts for r in first]
        assert [r.prompt_tokens for r in second] == [r.prompt_tokens for r in first]
        cached.generate(requests[:2] + [Request("new", zero_shot(problems[7]))], params)
        assert sent == [6, 1]  # only the new prompt

"""The `vllm` backend: options, the optional import, how results are assembled, and a real GPU run.

Most machines that run these tests have no GPU and no vLLM. The tests of option validation and of
the install message run everywhere; the assembly of results (chat and text prompts in one batch, n
completions, token counts, one rejected prompt among many) runs against a small stand-in `vllm`
module that answers like `vllm.LLM` does; the real generation test is marked `gpu` and skips with
a reason where vLLM or CUDA is missing.
"""

from __future__ import annotations

import subprocess
import sys
import types
from types import SimpleNamespace

import pytest

from scalingdown.errors import UserError
from scalingdown.teach import Request, SamplingParams, get_backend
from scalingdown.teach.vllm_backend import INSTALL_HINT, VLLMBackend

MESSAGES = [{"role": "user", "content": "What is 2 + 3?"}]


def test_registered_with_the_documented_defaults():
    assert get_backend("vllm") is VLLMBackend
    o = VLLMBackend.from_options({"model": "Qwen/Qwen2.5-7B-Instruct"}).options
    assert (o.tensor_parallel_size, o.pipeline_parallel_size, o.dtype) == (1, 1, "auto")
    assert (o.gpu_memory_utilization, o.max_model_len, o.seed) == (0.9, None, 0)
    assert (o.trust_remote_code, o.enforce_eager, o.data_parallel_size) == (False, False, 1)


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"tensor_parallel_size": 0}, "options.tensor_parallel_size"),
        ({"pipeline_parallel_size": -1}, "options.pipeline_parallel_size"),
        ({"gpu_memory_utilization": 1.5}, "options.gpu_memory_utilization"),
        ({"max_model_len": 0}, "options.max_model_len"),
        ({"dtype": "fp8"}, "options.dtype"),
        ({"tensor_parallel": 2}, "options.tensor_parallel"),
        ({"data_parallel_size": 0}, "options.data_parallel_size"),
    ],
)
def test_bad_options_name_the_key(options, key):
    with pytest.raises(UserError, match=rf"^{key}: "):
        VLLMBackend.from_options({"model": "m", **options})


def test_importing_the_backend_does_not_import_vllm():
    code = "import sys, scalingdown.teach.vllm_backend; print('vllm' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_without_vllm_the_first_batch_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` now fails as if not installed
    backend = VLLMBackend({"model": "m"})  # building it needs no vLLM
    assert backend.generate([], SamplingParams()) == []
    with pytest.raises(UserError) as info:
        backend.generate([Request("q", "2 + 3 =")], SamplingParams())
    assert (
        str(info.value) == INSTALL_HINT == "the vllm backend needs `pip install scalingdown[vllm]` and a GPU"
    )


class _StandInLLM:
    """Answers like `vllm.LLM`: one RequestOutput per prompt, completions possibly out of index order."""

    chat_template: str | None = "{{ messages }}"
    created: list[_StandInLLM] = []

    def __init__(self, **kwargs):
        if kwargs["model"] == "broken":
            raise RuntimeError("CUDA out of memory\nTried to allocate 2.00 GiB")
        self.kwargs, self.calls = kwargs, []
        _StandInLLM.created.append(self)

    def get_tokenizer(self):
        return SimpleNamespace(chat_template=self.chat_template)

    def _answer(self, prompt: str, sampling) -> SimpleNamespace:
        if "TOO LONG" in prompt:
            raise ValueError("The prompt is longer than the maximum model length")
        completions = [
            SimpleNamespace(index=i, text=f"{prompt.split()[-1]}|{i}", token_ids=[0] * (i + 2))
            for i in reversed(range(sampling.n))
        ]
        return SimpleNamespace(prompt_token_ids=[0] * len(prompt.split()), outputs=completions)

    def generate(self, prompts, sampling, use_tqdm=True):
        self.calls.append(("generate", list(prompts)))
        self.sampling = sampling
        return [self._answer(p, sampling) for p in prompts]

    def chat(self, conversations, sampling, use_tqdm=True):
        self.calls.append(("chat", list(conversations)))
        return [self._answer("chat:" + c[-1]["content"], sampling) for c in conversations]


@pytest.fixture
def stand_in_vllm(monkeypatch):
    module = types.ModuleType("vllm")
    module.LLM = _StandInLLM
    module.SamplingParams = lambda **kwargs: SimpleNamespace(**kwargs)
    monkeypatch.setitem(sys.modules, "vllm", module)
    _StandInLLM.created.clear()
    monkeypatch.setattr(_StandInLLM, "chat_template", "{{ messages }}")
    return module


def test_options_and_sampling_reach_vllm_and_results_keep_request_order(stand_in_vllm):
    backend = VLLMBackend(
        {"model": "org/teacher", "tensor_parallel_size": 2, "seed": 5, "max_model_len": 512}
    )
    requests = [Request("a", "one two three"), Request("b", MESSAGES), Request("c", "four five")]
    reported = []
    params = SamplingParams(temperature=0.7, top_p=0.9, max_tokens=33, n=2, stop=("\n\n",), seed=11)
    results = backend.generate(requests, params, on_result=reported.append)
    backend.generate(requests[:1], params)

    (llm,) = _StandInLLM.created  # built once, kept
    assert llm.kwargs["model"] == "org/teacher" and llm.kwargs["tensor_parallel_size"] == 2
    assert llm.kwargs["seed"] == 5 and llm.kwargs["max_model_len"] == 512
    assert "data_parallel_size" not in llm.kwargs  # ours: vLLM's own option of that name means another thing
    assert llm.calls[0] == ("chat", [MESSAGES]) and llm.calls[1] == (
        "generate",
        ["one two three", "four five"],
    )
    assert [r.key for r in results] == ["a", "b", "c"] and sorted(r.key for r in reported) == ["a", "b", "c"]
    assert results[0].texts == ["three|0", "three|1"]  # sorted by completion index
    assert results[1].texts == ["3?|0", "3?|1"]
    sent = llm.sampling
    assert (sent.n, sent.temperature, sent.top_p, sent.max_tokens) == (2, 0.7, 0.9, 33)
    assert (sent.stop, sent.seed) == (["\n\n"], 11)
    assert (results[0].prompt_tokens, results[0].completion_tokens) == (3, 2 + 3)


def test_a_gguf_model_reaches_vllm_as_its_converted_directory(stand_in_vllm, monkeypatch, tmp_path):
    import scalingdown.teach.vllm_backend as vllm_backend

    asked = []
    monkeypatch.setattr(
        vllm_backend, "materialise", lambda spec: asked.append(spec) or tmp_path / "converted"
    )
    backend = VLLMBackend({"model": "pkg:some_models/teacher.Q4_0.gguf"})
    backend.generate([Request("a", "one two")], SamplingParams())
    (llm,) = _StandInLLM.created
    assert asked == ["pkg:some_models/teacher.Q4_0.gguf"] and llm.kwargs["model"] == str(
        tmp_path / "converted"
    )
    assert backend.model == "pkg:some_models/teacher.Q4_0.gguf"  # the name the cache and the stats keep


def test_chat_without_a_template_is_rendered_as_text(stand_in_vllm, monkeypatch):
    monkeypatch.setattr(_StandInLLM, "chat_template", None)
    (result,) = VLLMBackend({"model": "m"}).generate([Request("q", MESSAGES)], SamplingParams())
    assert _StandInLLM.created[0].calls == [("generate", ["user: What is 2 + 3?\nassistant:"])]
    assert result.ok


def test_one_rejected_prompt_fails_alone(stand_in_vllm):
    requests = [Request("ok1", "fine prompt"), Request("bad", "TOO LONG " * 3), Request("ok2", "also fine")]
    results = VLLMBackend({"model": "m"}).generate(requests, SamplingParams())
    assert [r.ok for r in results] == [True, False, True]
    assert results[1].error == (
        "vLLM rejected this request: ValueError: The prompt is longer than the maximum model length"
    )


def test_an_engine_that_cannot_start_fails_every_request(stand_in_vllm):
    reported = []
    backend = VLLMBackend({"model": "broken"})
    results = backend.generate(
        [Request("a", "x"), Request("b", "y")], SamplingParams(), on_result=reported.append
    )
    assert len(reported) == 2 and all(not r.ok for r in results)
    assert results[0].error == results[1].error
    assert results[0].error.startswith("vLLM cannot load broken") and "CUDA out of memory" in results[0].error
    backend.close()


@pytest.mark.gpu
def test_real_generation_on_a_gpu(tmp_path):
    vllm = pytest.importorskip("vllm", reason="vLLM is not installed (pip install scalingdown[vllm])")
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    from scalingdown.config import TinyModelConfig
    from scalingdown.data.synthetic import generate
    from scalingdown.evaluate.prompts import worked_example, zero_shot
    from scalingdown.models.tiny import build_tiny

    problems = generate(40, seed=3, split="train")
    # head size 64: vLLM's attention kernels do not take the tiniest head sizes.
    config = TinyModelConfig(hidden_size=128, num_layers=2, num_heads=2, vocab_size=384, max_positions=256)
    model_dir = build_tiny(
        config, [worked_example(p) for p in problems], tmp_path / "tiny", seed=0, progress=False
    )
    backend = VLLMBackend(
        {"model": str(model_dir), "dtype": "float32", "gpu_memory_utilization": 0.3, "enforce_eager": True}
    )
    try:
        requests = [Request(f"q{i}", zero_shot(p)) for i, p in enumerate(problems[:4])]
        greedy = backend.generate(requests, SamplingParams(max_tokens=8))
        assert [r.key for r in greedy] == [r.key for r in requests]
        assert all(r.ok and len(r.texts) == 1 and 1 <= r.completion_tokens <= 8 for r in greedy)
        assert all(r.prompt_tokens > 10 for r in greedy)
        sampled = backend.generate(requests, SamplingParams(temperature=1.0, max_tokens=8, n=3, seed=1))
        assert all(len(r.texts) == 3 for r in sampled)
        too_long = Request("long", "word " * 400)  # past the model's 256 positions
        mixed = backend.generate([requests[0], too_long], SamplingParams(max_tokens=4))
        assert mixed[0].ok and not mixed[1].ok
        assert vllm.__version__
    finally:
        backend.close()

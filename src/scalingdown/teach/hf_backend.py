"""The `hf` teacher backend: a local transformers model, generating in batches.

The model loads once, on the first `generate` (so building the backend from a config costs nothing
until it is used), through `scalingdown.models.loading.load_model`, and generation reuses the
evaluation engine's batched generator (`scalingdown.evaluate.generation.generate_texts`): prompts
sorted by length, left-padded batches of `batch_size`, KV cache, stop strings cut from the text.

Prompts:
- a text prompt goes to the model as it is;
- chat messages go through the tokenizer's chat template (`apply_chat_template(...,
  add_generation_prompt=True, tokenize=False)`). A template that writes the BOS token itself, for a
  tokenizer that also adds one, would give the model two; the template's copy is dropped;
- chat messages for a tokenizer without a chat template are rendered as one "role: content" line
  per message followed by "assistant:", the plain frame a base model can continue.

Sampling: `SamplingParams` become `DecodingSettings` (n -> num_samples, seed -> seed, None -> 0).
Greedy decoding (temperature 0) with n > 1 generates once and repeats the text n times, as an
OpenAI-compatible server would answer; the completion tokens then count the one generation done.

Failures are `Result`s, never exceptions: a model that fails to load gives every request that one
error (naming the model path), remembered so that later calls do not retry the load; an exception
inside generation fails the requests not yet reported. An empty completion is returned as it is
(a local model is deterministic for a given seed, so failing it would only make a rerun repeat it);
the verification step drops it. Token counts are the model's own: `prompt_tokens` once per prompt,
`completion_tokens` summed over the n completions, each up to and including its EOS.

Data parallel: with `data_parallel_size` > 1, `generate` hands the batch to a
`scalingdown.teach.replicas.ReplicaPool` of that many worker processes, each with its own copy of
the model on its own GPU (one GPU per replica; on a CPU, each with its share of the cores), started
on the first batch and stopped by `close()`. The model is then never loaded in this process. Each
replica sees only its own GPU, so `device` must be 'auto', 'cpu', 'cuda' or 'cuda:0'.
"""

from __future__ import annotations

import gc
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from scalingdown.errors import UserError, exception_line
from scalingdown.evaluate.generation import DecodingSettings, Generation, generate_texts
from scalingdown.models.loading import LoadedModel, load_model
from scalingdown.teach.backend import (
    OnResult,
    Prompt,
    Request,
    Result,
    SamplingParams,
    TeacherBackend,
    local_model_identity,
    register_backend,
    validate_options,
)

if TYPE_CHECKING:
    from scalingdown.teach.replicas import ReplicaPool


class HFOptions(BaseModel):
    """Options of the `hf` backend (a teacher's `options` section, plus its `model`)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: str = Field(description="Hugging Face model id (org/name) or local model directory.")
    device: str = Field("auto", description="'auto' (the first CUDA GPU, else the CPU), 'cpu', 'cuda:N'.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weights' dtype: 'auto' is bfloat16 on a GPU that has it, else float32."
    )
    batch_size: int = Field(32, ge=1, description="Prompts generated together in one batch.")
    data_parallel_size: int = Field(
        1, ge=1, description="Copies of the model, each in its own process on its own GPU (or CPU share)."
    )

    @field_validator("device")
    @classmethod
    def _device_is_a_device(cls, device: str) -> str:
        if device != "auto":
            try:
                torch.device(device)
            except (RuntimeError, ValueError):
                raise ValueError(
                    f"{device!r} is not a device; use 'auto', 'cpu', 'cuda' or 'cuda:N'"
                ) from None
        return device

    @field_validator("data_parallel_size")
    @classmethod
    def _replicas_use_their_own_gpu(cls, size: int, info: ValidationInfo) -> int:
        device = info.data.get("device", "auto")
        if size > 1 and device.startswith("cuda:") and device != "cuda:0":
            raise ValueError(
                f"each replica sees only its own GPU as cuda:0; use device 'auto', not {device!r}"
            )
        return size


def chat_as_text(messages: Sequence[dict[str, Any]]) -> str:
    """The plain rendering of chat messages for a tokenizer without a chat template.

    One "role: content" line per message, then "assistant:" for the model to continue.
    """
    lines = [f"{m.get('role', 'user')}: {m.get('content', '')}" for m in messages]
    return "\n".join([*lines, "assistant:"])


def _adds_bos(tokenizer: Any) -> bool:
    bos = tokenizer.bos_token_id
    if bos is None:
        return False
    ids = tokenizer("x")["input_ids"]
    return bool(ids) and ids[0] == bos


def render_prompt(tokenizer: Any, prompt: Prompt) -> str:
    """The text the model is given for `prompt` (see the module docstring for chat messages)."""
    if isinstance(prompt, str):
        return prompt
    if not getattr(tokenizer, "chat_template", None):
        return chat_as_text(prompt)
    text = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    bos = tokenizer.bos_token
    # `generate_texts` tokenizes with the tokenizer's own special tokens; keep only one BOS.
    if bos and text.startswith(bos) and _adds_bos(tokenizer):
        text = text[len(bos) :]
    return text


@register_backend("hf")
class HFBackend(TeacherBackend):
    """Completions from a local transformers model; see the module docstring for the policy."""

    Options = HFOptions

    def __init__(self, options: HFOptions | dict):
        self.options = validate_options(HFOptions, options)
        self.model = self.options.model
        self._loaded: LoadedModel | None = None
        self._load_error: str | None = None
        self._pool: ReplicaPool | None = None

    def cache_identity(self) -> str:
        return local_model_identity(self.options.model, self.options.dtype)

    def __repr__(self) -> str:
        o = self.options
        return (
            f"HFBackend(model={o.model!r}, device={o.device!r}, dtype={o.dtype!r}, "
            f"batch_size={o.batch_size}, data_parallel_size={o.data_parallel_size})"
        )

    def _load(self) -> LoadedModel | None:
        """The loaded model, or None when loading failed (the reason is in `_load_error`)."""
        if self._loaded is None and self._load_error is None:
            o = self.options
            try:
                self._loaded = load_model(o.model, device=o.device, dtype=o.dtype)
            except UserError as exc:  # its message already names the model path
                self._load_error = f"cannot load the hf teacher model: {exc}"
            except Exception as exc:  # a broken weights file, out of memory, ...
                self._load_error = f"cannot load the hf teacher model {o.model}: {exception_line(exc)}"
        return self._loaded

    def has_chat_template(self) -> bool:
        """Whether the tokenizer has a chat template (loads the model; False if it cannot load)."""
        loaded = self._load()
        return loaded is not None and bool(getattr(loaded.tokenizer, "chat_template", None))

    def generate(
        self, requests: Sequence[Request], params: SamplingParams, *, on_result: OnResult | None = None
    ) -> list[Result]:
        if not requests:
            return []
        if self.options.data_parallel_size > 1:
            if self._pool is None:
                from scalingdown.teach.replicas import ReplicaPool

                self._pool = ReplicaPool("hf", self.options, replicas=self.options.data_parallel_size)
            return self._pool.generate(requests, params, on_result=on_result)
        results: list[Result | None] = [None] * len(requests)
        caller_failed = False

        def finish(i: int, result: Result) -> None:
            nonlocal caller_failed
            results[i] = result
            if on_result is not None:
                try:
                    on_result(result)
                except BaseException:
                    caller_failed = True
                    raise

        loaded = self._load()
        if loaded is None:
            for i, request in enumerate(requests):
                finish(i, Result(request.key, error=self._load_error))
            return list(results)  # type: ignore[arg-type]

        texts: list[str] = []
        todo: list[int] = []  # positions in `requests` that reach the model
        for i, request in enumerate(requests):
            try:
                texts.append(render_prompt(loaded.tokenizer, request.prompt))
                todo.append(i)
            except Exception as exc:  # a chat template that rejects these messages
                finish(i, Result(request.key, error=f"cannot apply the chat template ({exc})"))

        greedy = params.temperature <= 0
        copies = params.n if greedy else 1
        settings = DecodingSettings(
            max_new_tokens=params.max_tokens,
            stop=params.stop,
            temperature=params.temperature,
            top_p=params.top_p,
            num_samples=1 if greedy else params.n,
            batch_size=self.options.batch_size,
            seed=params.seed if params.seed is not None else 0,
        )

        def report_batch(indices: list[int], generations: list[Generation]) -> None:
            for j, generation in zip(indices, generations, strict=True):
                request = requests[todo[j]]
                result = Result(
                    request.key,
                    texts=list(generation.texts) * copies,
                    prompt_tokens=generation.prompt_tokens,
                    completion_tokens=sum(generation.new_tokens),
                )
                finish(todo[j], result)

        try:
            generate_texts(loaded, texts, settings, on_batch=report_batch, progress=False)
        except Exception as exc:
            if caller_failed:
                raise
            error = f"generation failed: {exception_line(exc)}"
            for i in todo:
                if results[i] is None:
                    finish(i, Result(requests[i].key, error=error))
        return list(results)  # type: ignore[arg-type]

    def close(self) -> None:
        """Free the model (and GPU memory) and stop the replicas; a later `generate` loads it again."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()
        loaded, self._loaded = self._loaded, None
        self._load_error = None
        if loaded is None:
            return
        device = loaded.device
        del loaded
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()

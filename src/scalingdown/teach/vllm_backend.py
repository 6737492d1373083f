"""The `vllm` teacher backend: offline generation with `vllm.LLM` on one or more local GPUs.

vLLM is an optional dependency (`pip install scalingdown[vllm]`): this module imports it only when
the first batch is generated, so reading a config, validating options or listing backends works
without it; a run that needs it and lacks it stops with one `UserError` line saying what to install.

The engine (`vllm.LLM(model, tensor_parallel_size=..., pipeline_parallel_size=..., dtype=...,
gpu_memory_utilization=..., max_model_len=..., seed=..., trust_remote_code=..., enforce_eager=...)`)
is built once and kept until `close()`. A batch is sent as one call, so vLLM's own scheduler
(continuous batching, paged KV cache) decides how to fill the GPUs: text prompts through
`llm.generate(prompts, sampling_params)`, chat messages through `llm.chat(conversations,
sampling_params)`, which applies the model's chat template. A tokenizer without a chat template
gets the `hf` backend's plain rendering ("role: content" lines, then "assistant:") through
`llm.generate` instead, since recent vLLM refuses chat without a template.

`SamplingParams` map one to one onto `vllm.SamplingParams(n, temperature, top_p, max_tokens, stop,
seed)`; a request seed of None leaves sampling to the engine's `seed` option. Very large batches are
sent `CHUNK_SIZE` requests at a time so that `on_result` (and with it the response cache) sees
answers during a long run, not only at its end; a chunk that large keeps vLLM's scheduler full.

Failures are `Result`s: an engine that cannot start (no GPU, a wrong model path, too little
memory) gives every request that one error; a chunk that vLLM rejects as a whole (one prompt
longer than `max_model_len` fails the whole call) is retried one request at a time, so only the
requests at fault fail. Token counts are vLLM's own (`prompt_token_ids`, each completion's
`token_ids`).

Data parallel: offline `vllm.LLM` has no data parallel for dense models, so `data_parallel_size` > 1
runs that many independent engines, each in its own process on its own `tensor_parallel_size *
pipeline_parallel_size` GPUs, through `scalingdown.teach.replicas.ReplicaPool`; `generate` hands the
batch to the pool (started on the first batch, stopped by `close()`) and builds no engine in this
process. The option is ours and never reaches `vllm.LLM` (whose own `data_parallel_size` means
ranks of one distributed engine, launched by hand for offline use).
"""

from __future__ import annotations

import contextlib
import gc
import importlib.util
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from scalingdown.errors import UserError, exception_line
from scalingdown.models.gguf import materialise
from scalingdown.models.gguf_files import is_gguf_source
from scalingdown.teach.backend import (
    OnResult,
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

INSTALL_HINT = "the vllm backend needs `pip install scalingdown[vllm]` and a GPU"
CHUNK_SIZE = 1024  # requests per vLLM call; see the module docstring


class VLLMOptions(BaseModel):
    """Options of the `vllm` backend; each but `data_parallel_size` is passed to `vllm.LLM` as named."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: str = Field(
        description="Hugging Face model id, local model directory, or GGUF model (a .gguf file or "
        "pkg:PACKAGE/FILE, converted once into a cached directory that vLLM loads)."
    )
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs that split each layer (tensor parallel).")
    pipeline_parallel_size: int = Field(1, ge=1, description="GPUs that hold successive layers.")
    dtype: Literal["auto", "float16", "bfloat16", "float32"] = Field(
        "auto", description="Weights' dtype; 'auto' takes the model config's (float16 for float32 models)."
    )
    gpu_memory_utilization: float = Field(
        0.9, gt=0, le=1, description="Share of each GPU's memory vLLM may take (weights and KV cache)."
    )
    max_model_len: int | None = Field(
        None, ge=1, description="Longest prompt + completion in tokens; empty: the model's own limit."
    )
    seed: int = Field(0, description="Engine seed, used for requests whose sampling has no seed.")
    trust_remote_code: bool = Field(False, description="Run model code shipped with a Hub model.")
    enforce_eager: bool = Field(False, description="No CUDA graphs: starts faster, generates slower.")
    data_parallel_size: int = Field(
        1,
        ge=1,
        description="Independent engines, each in its own process on its own tensor x pipeline GPUs.",
    )


def import_vllm() -> Any:
    """The `vllm` module, or a `UserError` saying how to install it."""
    try:
        import vllm
    except ImportError as exc:
        if exc.name is not None and exc.name != "vllm" and not exc.name.startswith("vllm."):
            raise UserError(f"vLLM is installed but cannot be imported ({exc})") from None
        raise UserError(INSTALL_HINT) from None
    return vllm


@register_backend("vllm")
class VLLMBackend(TeacherBackend):
    """Completions from `vllm.LLM`; see the module docstring for the policy."""

    Options = VLLMOptions

    def __init__(self, options: VLLMOptions | dict):
        self.options = validate_options(VLLMOptions, options)
        self.model = self.options.model
        self._llm: Any = None
        self._load_error: str | None = None
        self._pool: ReplicaPool | None = None

    def cache_identity(self) -> str:
        return local_model_identity(self.options.model, self.options.dtype)

    def __repr__(self) -> str:
        o = self.options
        return (
            f"VLLMBackend(model={o.model!r}, tensor_parallel_size={o.tensor_parallel_size}, "
            f"pipeline_parallel_size={o.pipeline_parallel_size}, data_parallel_size={o.data_parallel_size})"
        )

    def engine_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of `vllm.LLM`: every option but ours (`data_parallel_size`)."""
        return self.options.model_dump(exclude={"data_parallel_size"})

    def _engine(self) -> Any:
        """The `vllm.LLM`, built on first use; None when it failed to start (`_load_error` says why)."""
        vllm = import_vllm()  # raises UserError when missing, before anything else
        if self._llm is None and self._load_error is None:
            try:
                kwargs = self.engine_kwargs()
                if is_gguf_source(kwargs["model"]):  # vLLM gets the converted Hugging Face directory
                    kwargs["model"] = str(materialise(kwargs["model"]))
                self._llm = vllm.LLM(**kwargs)
            except Exception as exc:
                hint = ""
                with contextlib.suppress(Exception):
                    import torch

                    if not torch.cuda.is_available():
                        hint = " (no CUDA GPU is visible)"
                self._load_error = f"vLLM cannot load {self.options.model}{hint}: {exception_line(exc)}"
        return self._llm

    def _replicas(self) -> ReplicaPool:
        """The pool of engines; a missing vLLM is reported here, before any worker starts."""
        if self._pool is None:
            # find_spec, not import: importing vLLM here would cost the parent seconds for nothing.
            with contextlib.suppress(ValueError):  # ValueError: imported already, without a spec
                if importlib.util.find_spec("vllm") is None:
                    raise UserError(INSTALL_HINT)
            from scalingdown.teach.replicas import ReplicaPool

            o = self.options
            gpus = o.tensor_parallel_size * o.pipeline_parallel_size
            self._pool = ReplicaPool("vllm", o, replicas=o.data_parallel_size, gpus_per_replica=gpus)
        return self._pool

    def _sampling_params(self, params: SamplingParams) -> Any:
        return import_vllm().SamplingParams(
            n=params.n,
            temperature=params.temperature,
            top_p=params.top_p,
            max_tokens=params.max_tokens,
            stop=list(params.stop) or None,
            seed=params.seed,
        )

    def generate(
        self, requests: Sequence[Request], params: SamplingParams, *, on_result: OnResult | None = None
    ) -> list[Result]:
        if not requests:
            return []
        if self.options.data_parallel_size > 1:
            return self._replicas().generate(requests, params, on_result=on_result)
        llm = self._engine()
        results: list[Result] = []
        for start in range(0, len(requests), CHUNK_SIZE):
            chunk = requests[start : start + CHUNK_SIZE]
            if llm is None:
                done = [Result(r.key, error=self._load_error) for r in chunk]
            else:
                done = self._generate_chunk(llm, chunk, self._sampling_params(params))
            for result in done:
                if on_result is not None:
                    on_result(result)
            results.extend(done)
        return results

    def _generate_chunk(self, llm: Any, requests: Sequence[Request], sampling: Any) -> list[Result]:
        try:
            return self._call(llm, requests, sampling)
        except Exception as exc:
            if len(requests) == 1:
                return [Result(requests[0].key, error=f"vLLM rejected this request: {exception_line(exc)}")]
        # One bad prompt fails vLLM's whole call: find it (or them) by sending one at a time.
        return [result for request in requests for result in self._generate_chunk(llm, [request], sampling)]

    def _call(self, llm: Any, requests: Sequence[Request], sampling: Any) -> list[Result]:
        """One `llm.chat` and/or one `llm.generate` call; results in the order of `requests`."""
        from scalingdown.teach.hf_backend import chat_as_text

        tokenizer = llm.get_tokenizer()
        has_template = bool(getattr(tokenizer, "chat_template", None))
        chats = [i for i, r in enumerate(requests) if not isinstance(r.prompt, str) and has_template]
        texts = sorted(set(range(len(requests))) - set(chats))
        outputs: dict[int, Any] = {}
        if chats:
            conversations = [requests[i].prompt for i in chats]
            done = llm.chat(conversations, sampling, use_tqdm=False)
            outputs.update(zip(chats, done, strict=True))
        if texts:
            prompts = [
                r.prompt if isinstance(r.prompt, str) else chat_as_text(r.prompt)
                for r in (requests[i] for i in texts)
            ]
            done = llm.generate(prompts, sampling, use_tqdm=False)
            outputs.update(zip(texts, done, strict=True))
        results = []
        for i, request in enumerate(requests):
            output = outputs[i]
            completions = sorted(output.outputs, key=lambda c: c.index)
            results.append(
                Result(
                    request.key,
                    texts=[c.text for c in completions],
                    prompt_tokens=len(output.prompt_token_ids or []),
                    completion_tokens=sum(len(c.token_ids) for c in completions),
                )
            )
        return results

    def close(self) -> None:
        """Shut the engine (or the replicas) down and free GPU memory; a later `generate` starts anew."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()
        llm, self._llm = self._llm, None
        self._load_error = None
        if llm is None:
            return
        with contextlib.suppress(Exception):  # vLLM >= 0.8 (V1 engine) has an explicit shutdown
            llm.llm_engine.engine_core.shutdown()
        del llm
        gc.collect()
        with contextlib.suppress(Exception):
            from vllm.distributed.parallel_state import (
                destroy_distributed_environment,
                destroy_model_parallel,
            )

            destroy_model_parallel()
            destroy_distributed_environment()
        with contextlib.suppress(Exception):
            import torch

            torch.cuda.empty_cache()

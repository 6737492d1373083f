"""The typed study config: one source of truth for every option.

Field descriptions double as the CLI's `--help` text (see `field_help`). A YAML file is read with
`config_file.load_config`; any mistake becomes one `UserError` line naming the file, the line and the
key path, e.g. `study.yaml:7: teachers[1].backend: Input should be 'openai', 'vllm', 'hf' or 'replay'`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from scalingdown.errors import UserError


class _Strict(BaseModel):
    # Strict types: `seed: true` or `temperature: "0.5"` in a YAML file is a mistake, not a value to
    # coerce. Unknown keys are refused at every level.
    model_config = ConfigDict(extra="forbid", strict=True)


# A name becomes a folder (eval/<name>/, students/<name>/, teachers/<name>/): a plain file name only.
NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9._+-]{0,99}$"
NAME_RULE = "must be a plain file name: letters, digits and . _ + - (no '/', no '..', not hidden)"


def check_name(value: str) -> str:
    """`value` when it is a plain file name (NAME_PATTERN, and not '.' or '..'), else ValueError."""
    import re

    if not re.fullmatch(NAME_PATTERN, value) or value in (".", ".."):
        raise ValueError(f"{value!r} {NAME_RULE}")
    return value


class SyntheticConfig(_Strict):
    """Knobs of the built-in synthetic grade-school-math task."""

    n_train: int = Field(2000, ge=1, description="Number of training problems to generate.")
    n_test: int = Field(200, ge=1, description="Number of test problems to generate.")
    min_steps: int = Field(1, ge=1, description="Fewest arithmetic steps in a problem.")
    max_steps: int = Field(3, ge=1, description="Most arithmetic steps in a problem.")
    max_value: int = Field(20, ge=2, description="Largest operand a problem states.")
    templates: Literal["core", "broad"] = Field(
        "core", description="Template family: 'core' (the task) or 'broad' (a wider corpus, more templates)."
    )

    @model_validator(mode="after")
    def _steps_ordered(self) -> SyntheticConfig:
        if self.min_steps > self.max_steps:
            raise ValueError(f"min_steps ({self.min_steps}) is larger than max_steps ({self.max_steps})")
        return self


class DataConfig(_Strict):
    """Where the problems come from and how many to keep."""

    dataset: Literal["gsm8k", "aqua_rat", "svamp", "synthetic"] = Field(
        "synthetic", description="Data set: 'gsm8k', 'aqua_rat', 'svamp' or 'synthetic'."
    )
    path: str | None = Field(
        None,
        description="Local copy (a folder of split files); without it the Hugging Face Hub is used.",
    )
    train_limit: int | None = Field(None, ge=1, description="Keep at most this many training problems.")
    test_limit: int | None = Field(None, ge=1, description="Keep at most this many test problems.")
    dev_size: int = Field(
        0,
        ge=0,
        description="Hold this many train problems out (a seeded sample, in data/dev.jsonl): never taught "
        "or trained on; `eval.student_mode: select` chooses each student's inference mode on them.",
    )
    overlap_ngram: int = Field(8, ge=2, description="Word n-gram size of the train/test overlap check.")
    overlap_threshold: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Share of a test question's n-grams found in one train question to flag it.",
    )
    synthetic: SyntheticConfig = Field(default_factory=SyntheticConfig)


class TinyModelConfig(_Strict):
    """A small model built locally from a config, with a tokenizer trained on the task's text."""

    arch: Literal["llama", "gpt2", "t5"] = Field(
        "llama", description="Architecture family of the tiny model."
    )
    hidden_size: int = Field(64, ge=8, description="Width of the tiny model.")
    num_layers: int = Field(2, ge=1, description="Number of transformer layers.")
    num_heads: int = Field(4, ge=1, description="Attention heads per layer.")
    vocab_size: int = Field(
        512,
        ge=260,
        description="Size of the locally trained byte-level BPE vocabulary (at least 260: bytes + specials).",
    )
    max_positions: int = Field(512, ge=32, description="Longest sequence the model accepts.")
    pretrain_steps: int = Field(
        0, ge=0, description="Causal-LM steps on the train split's worked solutions before evaluation."
    )


class PublishedScore(_Strict):
    """An accuracy published for a model elsewhere, shown in the report beside the one measured here.

    Harnesses differ in prompt, shots and answer extraction; on GSM8K they move a model's accuracy by
    15-30 points, so a reader needs both figures, and the setting and source of the published one.
    """

    value: float = Field(ge=0, le=100, description="The published accuracy in percent (1.4 means 1.4%).")
    setting: str = Field(min_length=1, description="How it was measured, e.g. '5-shot, lighteval'.")
    source: str = Field(min_length=1, description="Where it was published, e.g. 'model card' or a URL.")


class ModelConfig(_Strict):
    """A model to evaluate: a Hugging Face id or local path, or a tiny model built on the spot."""

    name: str = Field(description="Short name; results go to eval/<name>/.")

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        return check_name(value)

    path: str | None = Field(
        None,
        description="Hugging Face model id, local directory, or GGUF model: a .gguf file or a file "
        "in an installed package, pkg:PACKAGE/FILE.",
    )
    tiny: TinyModelConfig | None = Field(
        None, description="Build a tiny model locally instead of loading one."
    )
    prompt: Literal["zero-shot", "few-shot", "student"] | None = Field(
        None, description="Prompt format for this model; defaults to eval.prompt."
    )
    published: PublishedScore | None = Field(
        None,
        description="A published accuracy to show beside ours: {value: percent, setting, source}.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> ModelConfig:
        if (self.path is None) == (self.tiny is None):
            raise ValueError("give exactly one of 'path' or 'tiny'")
        return self


class EvalConfig(_Strict):
    """How models are prompted, decoded and scored."""

    prompt: Literal["zero-shot", "few-shot", "student"] = Field(
        "zero-shot",
        description="Prompt format: 'zero-shot', 'few-shot' (chain-of-thought exemplars from train) "
        "or 'student' (the format a student was trained with, read from its directory).",
    )
    student_mode: str = Field(
        "auto",
        description="How a student is asked (prompt 'student'): 'answer' (TinyLLM: the answer task), "
        "'rationale:<teacher>' (that teacher's rationale task, the answer read from the rationale), "
        "'vote' (majority over every task the student learnt; ties go to the answer task, then the "
        "teachers in training order), 'single' (a pooled student's one task) or 'auto' ('answer' for "
        "a student with an answer task, else 'single') or 'select' (per trained replicate, the mode "
        "with the highest accuracy on the dev slice, data.dev_size; ties go to the answer task, then "
        "the rationale tasks, then the vote; the test set is answered in that mode, every mode's dev "
        "accuracy is recorded).",
    )

    @field_validator("student_mode")
    @classmethod
    def _known_mode(cls, value: str) -> str:
        if value in ("auto", "answer", "single", "vote", "select"):
            return value
        teacher = value.removeprefix("rationale:")
        if teacher != value:
            check_name(teacher)
            return value
        raise ValueError(
            f"{value!r}: expected 'auto', 'answer', 'single', 'vote', 'select' or 'rationale:<teacher>'"
        )

    num_fewshot: int = Field(4, ge=0, description="Worked examples in a few-shot prompt.")
    fewshot_teacher: str | None = Field(
        None,
        description="Take the few-shot exemplars' rationales from this teacher's kept (verified) "
        "rationales for the train problems, for a data set whose train split has none (SVAMP); "
        "default: the train split's own gold rationales.",
    )
    batch_size: int = Field(32, ge=1, description="Prompts generated together in one batch.")
    max_new_tokens: int = Field(256, ge=1, description="Most tokens generated per answer.")
    stop: list[str] = Field(
        default_factory=lambda: ["Question:", "\n\n\n"],
        description="Generation stops at any of these strings.",
    )
    temperature: float = Field(0.0, ge=0, description="Sampling temperature; 0 means greedy decoding.")
    self_consistency: int = Field(
        1, ge=1, description="Samples per problem, majority vote over answers (needs temperature > 0)."
    )
    limit: int | None = Field(None, ge=1, description="Evaluate only the first N test problems.")
    device: str = Field("auto", description="'auto', 'cpu', 'cuda' or 'cuda:N'.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weights' dtype: 'auto' is bfloat16 on a GPU that has it, else float32."
    )
    quantize: list[Literal["int8", "int8-bnb", "nf4"]] = Field(
        default_factory=lambda: ["int8"],
        description="Also evaluate every trained student quantised (not a student that is a reference): "
        "'int8' (dynamic, CPU), 'int8-bnb' and 'nf4' (bitsandbytes, GPU); a kind that cannot run here is "
        "skipped with its reason.",
    )
    quantize_seeds: list[int] | None = Field(
        None,
        description="Evaluate the quantised rungs of these training seeds only (default: every seed).",
    )
    speed_prompts: int = Field(
        8,
        ge=0,
        description="Test prompts of the speed measurement (latency, throughput, peak memory; each model "
        "in a fresh process); 0 skips it.",
    )
    speed_passes: int = Field(3, ge=1, description="Timed passes of the speed measurement (median, spread).")

    @model_validator(mode="after")
    def _sampling_for_votes(self) -> EvalConfig:
        if self.self_consistency > 1 and self.temperature == 0:
            raise ValueError("self_consistency > 1 needs temperature > 0 (greedy samples are all equal)")
        return self


class TeacherSampling(_Strict):
    """How a teacher samples its rationales (part of the cache key)."""

    temperature: float = Field(0.7, ge=0, description="Sampling temperature; 0 is greedy (then n must be 1).")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass.")
    max_tokens: int = Field(256, ge=1, description="Most tokens in one rationale.")
    n: int = Field(1, ge=1, description="Rationales sampled per question (deduplicated afterwards).")
    stop: list[str] = Field(
        default_factory=lambda: ["\nQuestion:", "\n\n\n"], description="Generation stops at any of these."
    )

    @model_validator(mode="after")
    def _greedy_single(self) -> TeacherSampling:
        if self.n > 1 and self.temperature == 0:
            raise ValueError("n > 1 needs temperature > 0 (greedy samples are all equal)")
        return self


class TeacherConfig(_Strict):
    """A teacher model that writes rationales (the teach stage)."""

    name: str = Field(description="Short name; rationales go to teachers/<name>/.")

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        return check_name(value)

    backend: Literal["openai", "vllm", "hf", "replay"] = Field(
        description="How the teacher is reached: 'openai' (any OpenAI-compatible endpoint), 'vllm' (offline "
        "vllm.LLM), 'hf' (local transformers model) or 'replay' (rationales read from a file)."
    )
    model: str | None = Field(
        None, description="Model id (openai, vllm), model id or path (hf), or the file to replay."
    )
    tiny: TinyModelConfig | None = Field(
        None,
        description="hf only: build a tiny teacher locally and pre-train it on 'corpus' (the offline demo).",
    )
    corpus: SyntheticConfig | None = Field(
        None,
        description="With 'tiny': the synthetic corpus of worked solutions the teacher learns from first "
        "(use templates: broad; n_train problems are used).",
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="Backend options, e.g. openai: base_urls, api_key_env, max_concurrency; vllm: "
        "tensor_parallel_size; hf: batch_size, device.",
    )
    mode: Literal["teacher-forcing", "free"] = Field(
        "teacher-forcing",
        description="'teacher-forcing' gives the gold answer and asks for the reasoning that leads to it "
        "(TinyLLM); 'free' asks without the answer.",
    )
    template: str | None = Field(
        None,
        description="Own prompt template with {examples}, {question}, {options} and (teacher-forcing) "
        "{answer}; "
        "default: the built-in TinyLLM template.",
    )
    num_examples: int = Field(
        2, ge=0, description="Worked in-context examples from the train split per prompt."
    )
    example_selection: Literal["random", "tfidf"] = Field(
        "random", description="How examples are drawn: seeded 'random', or the most similar by 'tfidf'."
    )
    chat: bool | None = Field(
        None,
        description="Send chat messages (chat template) instead of plain text; default: openai: its 'api' "
        "option; hf and vllm: whether the model's tokenizer has a chat template.",
    )
    sampling: TeacherSampling = Field(default_factory=TeacherSampling)
    verify: Literal["answer", "program"] = Field(
        "answer",
        description="How rationales are verified: 'answer' (prose: the gold answer, correct equations and "
        "work that leads to it) or 'program' (program-of-thought such as `def solution(): ... return "
        "result`: run in a sandbox, its return value compared with the gold answer).",
    )
    price_input_per_1k: float = Field(
        0.0, ge=0, description="Price per 1,000 prompt tokens (for cost figures)."
    )
    price_output_per_1k: float = Field(0.0, ge=0, description="Price per 1,000 completion tokens.")

    @model_validator(mode="after")
    def _one_model(self) -> TeacherConfig:
        if (self.model is None) == (self.tiny is None):
            raise ValueError("give exactly one of 'model' or 'tiny'")
        if self.tiny is not None and self.backend != "hf":
            raise ValueError("'tiny' teachers need backend 'hf'")
        if (self.tiny is None) != (self.corpus is None):
            raise ValueError("'tiny' and 'corpus' go together")
        return self


class TeachConfig(_Strict):
    """How rationales are checked, kept and paid for."""

    policy: Literal["keep", "drop", "flag"] = Field(
        "drop",
        description="A rationale whose answer is wrong or whose arithmetic fails: 'drop' it, 'flag' it "
        "(kept, "
        "marked unverified), or 'keep' it as is.",
    )
    check_arithmetic: bool = Field(True, description="Check the equations a rationale states (a op b = c).")
    limit: int | None = Field(None, ge=1, description="Ask teachers about only the first N train problems.")
    free_eval_problems: int = Field(
        50,
        ge=0,
        description="Test problems on which each teacher answers freely, to measure its own accuracy.",
    )
    routing: bool = Field(
        False,
        description="Cost-aware routing: ask teachers cheapest first and skip a question once it has "
        "'target_verified' verified rationales.",
    )
    target_verified: int = Field(
        1, ge=1, description="Verified rationales per question that routing aims for."
    )


class LoraSettings(_Strict):
    """LoRA adapter shape; defaults come from configs/lora_config.json, a study may override any field."""

    r: int = Field(16, ge=1, description="Rank of the LoRA update matrices.")
    alpha: int = Field(32, ge=1, description="LoRA scaling numerator (the update is scaled by alpha / r).")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA path.")
    target_modules: list[str] | str = Field(
        "all-linear",
        description="Module names that get adapters (e.g. [q_proj, v_proj]), or 'all-linear'.",
    )


class Hyperparameters(_Strict):
    """Training hyperparameters; defaults come from configs/hyperparameters.yaml."""

    epochs: float = Field(3.0, gt=0, description="Passes over the training examples (fractions allowed).")
    max_steps: int | None = Field(
        None, ge=1, description="Stop after this many optimizer steps (overrides epochs)."
    )
    batch_size: int = Field(8, ge=1, description="Examples per device per micro-batch.")
    grad_accumulation: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    learning_rate: float = Field(2e-4, gt=0, description="Peak learning rate.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="Share of steps spent warming up.")
    schedule: Literal["cosine", "linear", "constant"] = Field("cosine", description="Learning-rate schedule.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")
    max_length: int = Field(512, ge=16, description="Longest tokenised example; longer ones are cut.")
    group_by_length: bool = Field(True, description="Batch examples of similar length to avoid padding.")
    gradient_checkpointing: bool = Field(
        False,
        description="Recompute each layer's activations in the backward pass instead of keeping them: "
        "less memory, about a third more compute (lora and full; qlora always has it on).",
    )
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = Field(
        "auto", description="'auto': bf16 on a GPU that has it, else fp16 on a GPU, else none."
    )
    checkpoint_every: int = Field(100, ge=1, description="Save a resumable checkpoint every N steps.")
    keep_checkpoints: int = Field(2, ge=1, description="Most recent checkpoints to keep.")
    log_every: int = Field(10, ge=1, description="Write a line to train_log.jsonl every N steps.")
    report_to: list[Literal["tensorboard", "wandb", "mlflow"]] = Field(
        default_factory=list, description="Experiment trackers to log to, when installed."
    )


# The old `format` names of two combination strategies.
FORMAT_COMBINE = {"multitask": "tasks", "single": "pool"}


class StudentConfig(_Strict):
    """A student model to distil into."""

    name: str = Field(description="Short name; the trained student goes to students/<name>/.")

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        return check_name(value)

    path: str | None = Field(None, description="Hugging Face model id or local directory of the base model.")
    tiny: TinyModelConfig | None = Field(None, description="Build a tiny model locally (demo, tests).")
    method: Literal["lora", "qlora", "full"] = Field(
        "lora", description="'lora', 'qlora' (4-bit, GPU) or 'full'."
    )
    format: Literal["multitask", "single"] | None = Field(
        None,
        description="Old name of 'combine', still read: 'multitask' is combine 'tasks', 'single' is "
        "combine 'pool'.",
    )
    combine: Literal["tasks", "pool", "route", "weighted"] | None = Field(
        None,
        validate_default=True,
        description="How the teachers' rationales become training examples: 'tasks' (TinyLLM: an answer "
        "task plus one rationale task per teacher, weights alpha_i), 'pool' (Fine-tune-CoT: every kept "
        "rationale of every teacher as a question -> rationale-then-answer example), 'route' (per "
        "question only the best-ranked teacher with a verified rationale, in the 'tasks' frame) or "
        "'weighted' ('tasks' with alpha_i set from each teacher's measured quality). Default: from "
        "'format', else 'tasks'.",
    )
    rank_by: Literal["verified_share", "free_accuracy"] | None = Field(
        None,
        validate_default=True,
        description="combine 'route' and 'weighted': the teacher quality read from teachers/<name>/"
        "stats.json, 'verified_share' (share of its train rationales that verified; default) or "
        "'free_accuracy' (its own accuracy answering test problems in free mode).",
    )
    teachers: list[str] | None = Field(None, description="Teachers whose rationales it learns; default: all.")
    answer_weight: float = Field(1.0, ge=0, description="gamma: weight of the answer task's loss.")
    rationale_weights: dict[str, float] = Field(
        default_factory=dict,
        description="alpha_i per teacher name (default 1.0 each); combine 'weighted' sets them itself.",
    )
    kl_weight: float = Field(
        0.0, ge=0, description="Weight of the white-box KL term for local teachers that share the tokenizer."
    )
    kl_kind: Literal["forward_kl", "jsd"] = Field(
        "forward_kl", description="Divergence of the white-box term."
    )
    merge: bool = Field(False, description="Also save LoRA-merged full weights (students/<name>/merged).")
    seeds: list[int] | None = Field(
        None,
        min_length=1,
        description="Training seeds of this student (replicates); overrides the study's 'seeds'.",
    )
    lora: dict[str, Any] = Field(default_factory=dict, description="Overrides of configs/lora_config.json.")
    hyperparameters: dict[str, Any] = Field(
        default_factory=dict, description="Overrides of configs/hyperparameters.yaml for this student."
    )

    @field_validator("combine")
    @classmethod
    def _combine_or_format(cls, value: str | None, info: ValidationInfo) -> str:
        # `format` is validated first (it comes first), so a bad format is reported as itself.
        old = info.data.get("format")
        implied = FORMAT_COMBINE.get(old) if old is not None else None
        if value is None:
            return implied or "tasks"
        if implied is not None and implied != value:
            raise ValueError(
                f"{value!r} contradicts format {old!r} (format {old!r} is combine {implied!r}); "
                "give only 'combine'"
            )
        return value

    @field_validator("rank_by")
    @classmethod
    def _rank_for_ranking_strategies(cls, value: str | None, info: ValidationInfo) -> str | None:
        combine = info.data.get("combine")
        ranks = combine in ("route", "weighted")
        if value is not None and combine is not None and not ranks:
            raise ValueError(f"only combine 'route' and 'weighted' rank teachers (this is {combine!r})")
        return (value or "verified_share") if ranks else None

    @field_validator("rationale_weights")
    @classmethod
    def _weights_not_measured(cls, value: dict[str, float], info: ValidationInfo) -> dict[str, float]:
        if value and info.data.get("combine") == "weighted":
            raise ValueError(
                "combine 'weighted' sets alpha_i from the teachers' measured quality: drop "
                "rationale_weights, or use combine 'tasks'"
            )
        return value

    @model_validator(mode="after")
    def _one_source(self) -> StudentConfig:
        if (self.path is None) == (self.tiny is None):
            raise ValueError("give exactly one of 'path' or 'tiny'")
        return self


class ReportConfig(_Strict):
    """How the report decides that a student beats a reference."""

    references: list[str] = Field(
        default_factory=list,
        description="Names of the models (from 'models', 'students' or 'teachers') each student must beat.",
    )
    alpha: float = Field(
        0.05,
        gt=0,
        lt=1,
        description="Family-wise error rate of the whole answer: the fixed-sequence test down the ladder "
        "(and Holm across references) keeps the chance of any false 'beats' at or below it.",
    )
    test: Literal["permutation", "mcnemar", "bootstrap"] = Field(
        "permutation",
        description="Kept for old configs: every paired test is now the one-sided sign-flip permutation "
        "test pooling seeds (for one seed on each side it is the exact McNemar test).",
    )
    ladder: list[str] | None = Field(
        None,
        description="The students to test against each reference, in any order (tested largest first); "
        "default: every student. Name the ladder before the run; ablation students stay out of it.",
    )
    crossover_samples: int = Field(1000, ge=100, description="Bootstrap resamples of the crossover fit.")
    bootstrap_samples: int = Field(10000, ge=100, description="Paired bootstrap resamples.")
    price_per_hour: float = Field(
        0.0,
        ge=0,
        description="Price of one device-hour (serving and training), for cost per 1,000 questions, cost "
        "per correct answer and break-even.",
    )
    price_per_1k_tokens: float = Field(
        0.0, ge=0, description="Serving price per 1,000 generated tokens (added to the device-hour price)."
    )


class StudyConfig(_Strict):
    """A whole study: data, teachers, models and evaluation settings."""

    name: str = Field("study", description="Name of the study, shown in reports.")
    run_dir: str = Field(
        "runs/study", min_length=1, description="Directory that holds every artifact of the run."
    )
    seed: int = Field(0, description="Seed for data sampling, model init and decoding.")
    seeds: list[int] | None = Field(
        None,
        min_length=1,
        description="Train and evaluate every student once per seed (replicates, in "
        "students/<name>/seed-<s>/); the report pools them. Default: one run with 'seed'.",
    )
    data: DataConfig = Field(default_factory=DataConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    models: list[ModelConfig] = Field(default_factory=list, description="Models to evaluate.")
    teachers: list[TeacherConfig] = Field(default_factory=list, description="Teacher models.")
    teach: TeachConfig = Field(default_factory=TeachConfig)
    students: list[StudentConfig] = Field(
        default_factory=list, description="Students to train, smallest first."
    )
    report: ReportConfig = Field(default_factory=ReportConfig)
    lora: dict[str, Any] = Field(
        default_factory=dict, description="Study-wide overrides of lora_config.json."
    )
    hyperparameters: dict[str, Any] = Field(
        default_factory=dict, description="Study-wide overrides of hyperparameters.yaml."
    )

    @model_validator(mode="after")
    def _unique_names(self) -> StudyConfig:
        for kind, items in (
            ("models", self.models),
            ("teachers", self.teachers),
            ("students", self.students),
        ):
            seen: set[str] = set()
            for item in items:
                if item.name in seen:
                    raise ValueError(f"{kind}: the name {item.name!r} is used twice")
                seen.add(item.name)
        both = {m.name for m in self.models} & {s.name for s in self.students}
        if both:  # both would be evaluated into eval/<name>/
            raise ValueError(f"the name {sorted(both)[0]!r} is both a model and a student")
        for where, seeds in [("seeds", self.seeds)] + [
            (f"students[{i}].seeds", s.seeds) for i, s in enumerate(self.students)
        ]:
            if seeds is not None and len(set(seeds)) != len(seeds):
                raise ValueError(f"{where}: a seed is listed twice ({seeds})")
        if self.eval.student_mode == "select" and not self.data.dev_size:
            raise ValueError("eval.student_mode: 'select' chooses on a dev slice: set data.dev_size > 0")
        named = self.eval.fewshot_teacher
        if named is not None and named not in {t.name for t in self.teachers}:
            known = ", ".join(t.name for t in self.teachers) or "none"
            raise ValueError(
                f"eval.fewshot_teacher: {named!r} is not a teacher of this study (teachers: {known})"
            )
        return self


def key_path(loc: tuple[Any, ...]) -> str:
    """`("students", 1, "lora", "r")` -> `students[1].lora.r`."""
    out = ""
    for item in loc:
        out += f"[{item}]" if isinstance(item, int) else (f".{item}" if out else str(item))
    return out or "(top level)"


def field_help(model: type[BaseModel], name: str) -> str:
    """The field's description, so CLI `--help` and YAML docs say the same thing."""
    return model.model_fields[name].description or ""


def shipped_config_dir() -> Path:
    """`configs/`: inside the installed package, or beside the source in a checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "configs", here.parents[1] / "configs"):
        if (candidate / "hyperparameters.yaml").is_file():
            return candidate
    raise UserError(
        "the shipped configs (hyperparameters.yaml, lora_config.json) are missing from this install"
    )


def _validated(model: type[BaseModel], data: dict, where: str, source: str | Path) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        message = first["msg"].removeprefix("Value error, ")
        raise UserError(f"{where}{key_path(tuple(first['loc']))}: {message}", path=source) from None


def shipped_training_defaults() -> tuple[dict, dict]:
    """The shipped LoRA settings and hyperparameters (configs/lora_config.json,
    configs/hyperparameters.yaml) as dicts, each checked; a mistake names its file."""
    import json

    folder = shipped_config_dir()
    lora_file, hp_file = folder / "lora_config.json", folder / "hyperparameters.yaml"
    try:
        lora = json.loads(lora_file.read_text(encoding="utf-8"))
        hyper = yaml.safe_load(hp_file.read_text(encoding="utf-8")) or {}
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise UserError(f"cannot read the shipped training defaults: {exc}", path=folder) from None
    _validated(LoraSettings, lora, "", lora_file)
    _validated(Hyperparameters, hyper, "", hp_file)
    return lora, hyper


def training_settings(study: StudyConfig, index: int) -> tuple[LoraSettings, Hyperparameters]:
    """LoRA settings and hyperparameters of student `index`: the shipped defaults
    (configs/lora_config.json, configs/hyperparameters.yaml), then the study's overrides, then the
    student's own. A mistake names the key that made it, e.g. `students[1].hyperparameters.batch_size`."""
    lora, hyper = shipped_training_defaults()
    student = study.students[index]
    _validated(LoraSettings, {**lora, **study.lora}, "lora.", "study config")
    _validated(Hyperparameters, {**hyper, **study.hyperparameters}, "hyperparameters.", "study config")
    where = f"students[{index}]."
    lora_settings = _validated(
        LoraSettings, {**lora, **study.lora, **student.lora}, where + "lora.", "study config"
    )
    hyperparameters = _validated(
        Hyperparameters,
        {**hyper, **study.hyperparameters, **student.hyperparameters},
        where + "hyperparameters.",
        "study config",
    )
    return lora_settings, hyperparameters

"""load_student: LoRA trains only the adapter, full trains everything, QLoRA asks for what it needs."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch

from scalingdown.config import LoraSettings, TinyModelConfig
from scalingdown.errors import UserError
from scalingdown.models.tiny import build_tiny
from scalingdown.train.students import Student, count_parameters, linear_module_names, load_student
from tests.models.test_pretrain import addition_texts

CPU = torch.device("cpu")
LORA = LoraSettings(r=4, alpha=8, dropout=0.0, target_modules="all-linear")


def build_bases(root: Path) -> dict[str, Path]:
    """Tiny llama (causal) and t5 (seq2seq) base models under `root`, built from a config in code."""
    texts = addition_texts(100)
    bases = {}
    for arch in ("llama", "t5"):
        config = TinyModelConfig(arch=arch, hidden_size=32, num_heads=2, vocab_size=300, max_positions=64)
        bases[arch] = build_tiny(config, texts, root / arch, seed=0, progress=False)
    return bases


def training_batch(student: Student) -> dict[str, torch.Tensor]:
    """Two question/answer pairs as a padded batch with labels (pad positions masked with -100)."""
    tok = student.tokenizer
    if student.is_seq2seq:
        batch = tok(["Question: 3 + 4 = ?", "Question: 12 + 5 = ?"], return_tensors="pt", padding=True)
        labels = tok(["Answer: 7", "Answer: 17"], return_tensors="pt", padding=True)
        batch["labels"] = labels["input_ids"].masked_fill(labels["attention_mask"] == 0, -100)
    else:
        batch = tok(
            ["Question: 3 + 4 = ?\nAnswer: 7", "Question: 1 + 5 = ?\nAnswer: 6"],
            return_tensors="pt",
            padding=True,
        )
        batch["labels"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    return batch


def train_steps(student: Student, steps: int = 2, lr: float = 1e-2) -> list[float]:
    """A few AdamW steps over the trainable parameters; returns the losses."""
    params = [p for p in student.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr)
    batch = training_batch(student)
    losses = []
    for _ in range(steps):
        loss = student.model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def bases(tmp_path_factory) -> dict[str, Path]:
    return build_bases(tmp_path_factory.mktemp("bases"))


@pytest.mark.parametrize("arch", ["llama", "t5"])
def test_lora_makes_only_the_adapter_trainable(bases, arch):
    from peft import PeftModelForCausalLM, PeftModelForSeq2SeqLM

    student = load_student(str(bases[arch]), method="lora", lora=LORA, device=CPU)
    assert student.is_seq2seq == (arch == "t5")
    assert isinstance(student.model, PeftModelForSeq2SeqLM if arch == "t5" else PeftModelForCausalLM)
    trainable = {n: p for n, p in student.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)
    assert student.trainable_parameters == sum(p.numel() for p in trainable.values())
    assert student.total_parameters == sum(p.numel() for p in student.model.parameters())
    assert 0 < student.trainable_parameters < student.total_parameters
    assert student.method == "lora" and student.model.training
    assert student.tokenizer.padding_side == "right" and student.tokenizer.pad_token_id is not None
    assert Path(student.base_model).is_absolute() and Path(student.base_model) == bases[arch].resolve()


@pytest.mark.parametrize("arch", ["llama", "t5"])
def test_a_lora_training_step_changes_only_the_adapter(bases, arch):
    student = load_student(str(bases[arch]), method="lora", lora=LORA, device=CPU)
    before = snapshot(student.model)
    losses = train_steps(student)
    after = student.model.state_dict()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed, "the adapter did not move"
    assert all("lora_" in name for name in changed)
    # lora_B starts at zero, so every adapter's B must have moved; base weights are bit-identical.
    assert all(name in changed for name in before if "lora_B" in name)
    assert all(torch.equal(before[n], after[n]) for n in before if "lora_" not in n)
    assert all(torch.isfinite(torch.tensor(losses)))


def test_explicit_target_modules_get_adapters_and_nothing_else(bases):
    lora = LoraSettings(r=2, alpha=4, dropout=0.0, target_modules=["q_proj", "v_proj"])
    student = load_student(str(bases["llama"]), method="lora", lora=lora, device=CPU)
    adapted = {
        n.split(".lora_")[0].rsplit(".", 1)[-1] for n, _ in student.model.named_parameters() if "lora_" in n
    }
    assert adapted == {"q_proj", "v_proj"}


def test_full_fine_tuning_trains_every_weight(bases):
    student = load_student(str(bases["llama"]), method="full", lora=LORA, device=CPU)
    assert all(p.requires_grad for p in student.model.parameters())
    assert student.trainable_parameters == student.total_parameters == student.model.num_parameters()
    before = snapshot(student.model)
    train_steps(student)
    after = student.model.state_dict()
    for name in ("model.layers.0.self_attn.q_proj.weight", "model.layers.1.mlp.down_proj.weight"):
        assert not torch.equal(before[name], after[name]), name


def test_a_target_module_the_model_lacks_is_one_clear_line(bases):
    lora = LoraSettings(target_modules=["q_proj", "q_projj"])
    with pytest.raises(UserError) as info:
        load_student(str(bases["llama"]), method="lora", lora=lora, device=CPU, where="students[2]")
    message = str(info.value)
    assert message.startswith(
        f"students[2].lora.target_modules: 'q_projj' matches no module of {bases['llama']} (linear modules: "
    )
    assert "q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj)" in message
    assert "lm_head" not in message and "\n" not in message


def test_a_regex_target_that_matches_nothing(bases):
    with pytest.raises(
        UserError, match=r"students\[0\]\.lora\.target_modules: '\.\*nothing' matches no module"
    ):
        load_student(
            str(bases["t5"]), method="lora", lora=LoraSettings(target_modules=".*nothing"), device=CPU
        )


def test_a_target_lora_cannot_wrap_is_a_user_error(bases):
    with pytest.raises(UserError, match=r"students\[0\]\.lora\.target_modules: "):
        load_student(
            str(bases["llama"]), method="lora", lora=LoraSettings(target_modules=["norm"]), device=CPU
        )


def test_linear_module_names_of_a_seq2seq_model(bases):
    from transformers import AutoModelForSeq2SeqLM

    model = AutoModelForSeq2SeqLM.from_pretrained(bases["t5"])
    assert linear_module_names(model) == ["q", "k", "v", "o", "wi", "wo"]


def test_unknown_method(bases):
    with pytest.raises(UserError, match=r"students\[0\]\.method: 'prefix' is not one of lora, qlora, full"):
        load_student(str(bases["llama"]), method="prefix", lora=LORA, device=CPU)


def test_missing_pad_token_becomes_eos(bases, tmp_path):
    copy = tmp_path / "nopad"
    shutil.copytree(bases["llama"], copy)
    config_path = copy / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    del config["pad_token"]
    config_path.write_text(json.dumps(config))
    student = load_student(str(copy), method="full", lora=LORA, device=CPU)
    assert student.tokenizer.pad_token == student.tokenizer.eos_token
    assert student.tokenizer.padding_side == "right"


def test_a_missing_base_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no such model directory"):
        load_student(str(tmp_path / "nothing"), method="lora", lora=LORA, device=CPU)


def test_count_parameters_counts_frozen_and_tied_weights_once():
    shared = torch.nn.Linear(3, 3)
    model = torch.nn.Sequential(shared, torch.nn.Linear(3, 2), shared)
    model[1].weight.requires_grad_(False)
    assert count_parameters(model) == (12 + 2, 12 + 8)


def _qlora_possible() -> bool:
    return torch.cuda.is_available() and importlib.util.find_spec("bitsandbytes") is not None


@pytest.mark.skipif(_qlora_possible(), reason="CUDA and bitsandbytes are here; the GPU test covers QLoRA")
def test_qlora_without_cuda_or_bitsandbytes_says_what_it_needs(bases):
    with pytest.raises(UserError) as info:
        load_student(str(bases["llama"]), method="qlora", lora=LORA)
    assert str(info.value) == "students[0].method: qlora needs a CUDA GPU and `pip install bitsandbytes`"


@pytest.mark.gpu
def test_qlora_trains_a_4bit_base_with_lora(bases):
    if not torch.cuda.is_available():
        pytest.skip("QLoRA needs a CUDA GPU and none is available")
    if importlib.util.find_spec("bitsandbytes") is None:
        pytest.skip("QLoRA needs bitsandbytes (`pip install bitsandbytes`)")
    student = load_student(str(bases["llama"]), method="qlora", lora=LORA)
    kinds = {type(m).__name__ for m in student.model.modules()}
    assert "Linear4bit" in kinds
    trainable = [n for n, p in student.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    batch = {k: v.cuda() for k, v in training_batch(student).items()}
    before = snapshot(student.model)
    loss = student.model(**batch).loss
    loss.backward()
    torch.optim.AdamW([p for p in student.model.parameters() if p.requires_grad], lr=1e-2).step()
    after = student.model.state_dict()
    changed = [n for n in before if not torch.equal(before[n], after[n])]
    assert changed and all("lora_" in n for n in changed)


def test_default_device_follows_local_rank_only_on_a_gpu(monkeypatch):
    from scalingdown.train.students import default_device

    monkeypatch.setenv("LOCAL_RANK", "1")
    if torch.cuda.is_available():
        assert default_device() == torch.device("cuda", 1 % torch.cuda.device_count())
    else:
        assert default_device() == torch.device("cpu")


@pytest.mark.parametrize(("arch", "method"), [("llama", "lora"), ("llama", "full"), ("t5", "lora")])
def test_gradient_checkpointing_recomputes_layers_and_gives_the_same_gradients(bases, arch, method):
    from scalingdown.train.chunked_loss import transformers_model

    grads, calls = {}, {}
    for on in (False, True):
        torch.manual_seed(0)  # the same adapter initialisation both times
        student = load_student(
            str(bases[arch]), method=method, lora=LORA, device=CPU, gradient_checkpointing=on
        )
        model = transformers_model(student.model)
        assert model.is_activation_checkpointing == on
        feed_forward = next(m for m in model.modules() if type(m).__name__.endswith(("MLP", "LayerFF")))
        calls[on] = 0
        # A pre-hook: the recomputation stops as soon as it has what the backward needs, inside the block.
        feed_forward.register_forward_pre_hook(lambda *_, on=on: calls.__setitem__(on, calls[on] + 1))
        student.model(**training_batch(student)).loss.backward()
        grads[on] = {n: p.grad for n, p in student.model.named_parameters() if p.requires_grad}
    assert calls == {False: 1, True: 2}  # with it on, the backward pass runs the layer again
    assert grads[True].keys() == grads[False].keys()
    for name, grad in grads[True].items():
        assert grad is not None, name
        torch.testing.assert_close(grad, grads[False][name], rtol=1e-6, atol=1e-7, msg=name)

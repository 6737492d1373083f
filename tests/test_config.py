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

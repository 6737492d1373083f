"""The data sources registry and the `data` stage end to end on real files."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import get_args

import pytest
from rich.console import Console

from scalingdown.config import DataConfig, StudyConfig, SyntheticConfig
from scalingdown.data.gsm8k import load_gsm8k
from scalingdown.data.sources import known_datasets, load_splits
from scalingdown.data.stage import is_data_stage_done, load_run_problems, run_data_stage
from scalingdown.errors import UserError


def gsm8k_row(question: str, answer: int) -> str:
    return json.dumps(
        {"question": question, "answer": f"Work: <<{answer}*1={answer}>>{answer}\n#### {answer}"}
    )


def test_known_datasets_and_unknown_name() -> None:
    assert set(known_datasets()) == {"gsm8k", "aqua_rat", "svamp", "synthetic"}
    # Every name the config accepts has a loader, and no loader is unreachable from a config.
    assert set(known_datasets()) == set(get_args(DataConfig.model_fields["dataset"].annotation))
    # The config's Literal stops this name in YAML; the registry is the second line of defence.
    config = DataConfig().model_copy(update={"dataset": "mmlu"})
    with pytest.raises(
        UserError, match=r"unknown data set 'mmlu' \(known: aqua_rat, gsm8k, svamp, synthetic\)"
    ):
        load_splits(config, seed=0)


def test_gsm8k_limits_take_the_first_n(gsm8k_dir: Path) -> None:
    train, test = load_splits(
        DataConfig(dataset="gsm8k", path=str(gsm8k_dir), train_limit=30, test_limit=7), 0
    )
    assert train == load_gsm8k("train", gsm8k_dir)[:30]
    assert test == load_gsm8k("test", gsm8k_dir)[:7]
    again = load_splits(DataConfig(dataset="gsm8k", path=str(gsm8k_dir), train_limit=30, test_limit=7), 99)
    assert again == (train, test)  # limits do not depend on the seed


def test_local_aqua_trains_on_dev(aqua_dir: Path) -> None:
    train, test = load_splits(DataConfig(dataset="aqua_rat", path=str(aqua_dir)), 0)
    assert (len(train), len(test)) == (254, 254)
    assert train[0].id == "aqua_rat-dev-00000" and test[0].id == "aqua_rat-test-00000"


@pytest.mark.parametrize("dataset", ["gsm8k", "aqua_rat"])
def test_missing_path_and_single_file(tmp_path: Path, dataset: str) -> None:
    missing = tmp_path / "no_such_folder"
    with pytest.raises(UserError, match=re.escape(f"data.path: {missing} does not exist")):
        load_splits(DataConfig(dataset=dataset, path=str(missing)), 0)
    single = tmp_path / "one.jsonl"
    single.write_text(gsm8k_row("q?", 1) + "\n")
    with pytest.raises(UserError, match="single file"):
        load_splits(DataConfig(dataset=dataset, path=str(single)), 0)


def test_synthetic_reads_no_path(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="data.path"):
        load_splits(DataConfig(dataset="synthetic", path=str(tmp_path)), 0)


def test_synthetic_splits_follow_the_config_and_seed() -> None:
    pytest.importorskip("scalingdown.data.synthetic")
    config = DataConfig(dataset="synthetic", synthetic=SyntheticConfig(n_train=40, n_test=12), train_limit=25)
    train, test = load_splits(config, seed=3)
    assert (len(train), len(test)) == (25, 12)
    assert all(p.source == "synthetic" for p in train + test)
    assert load_splits(config, seed=3) == (train, test)


def test_stage_end_to_end_on_gsm8k(gsm8k_dir: Path, tmp_path: Path) -> None:
    config = StudyConfig(
        data=DataConfig(dataset="gsm8k", path=str(gsm8k_dir), train_limit=200, test_limit=50)
    )
    run_dir = tmp_path / "run"
    assert not is_data_stage_done(run_dir)
    with pytest.raises(UserError, match=re.escape("run `scalingdown data` first")):
        load_run_problems(run_dir, "train")

    out = io.StringIO()
    report = run_data_stage(config, run_dir, console=Console(file=out, width=300))

    assert is_data_stage_done(run_dir)
    assert sorted(p.name for p in (run_dir / "data").iterdir()) == [
        "report.json",
        "test.jsonl",
        "train.jsonl",
    ]
    assert load_run_problems(run_dir, "train") == load_gsm8k("train", gsm8k_dir)[:200]
    assert load_run_problems(run_dir, "test") == load_gsm8k("test", gsm8k_dir)[:50]
    assert json.loads((run_dir / "data" / "report.json").read_text()) == report
    assert report["dataset"] == "gsm8k"
    assert report["source"] == str(gsm8k_dir.resolve())
    assert report["counts"] == {"train": 200, "test": 50}
    overlap = report["overlap"]
    assert (overlap["ngram"], overlap["threshold"]) == (8, 0.5)
    assert overlap["flagged"] == len(overlap["examples"]) and overlap["exact"] <= overlap["flagged"]
    assert report["seconds"] >= 0
    assert "200 train, 50 test" in out.getvalue()


def test_stage_reports_planted_overlap(tmp_path: Path) -> None:
    folder = tmp_path / "tiny_gsm8k"
    folder.mkdir()
    shared = "A farmer has 12 cows and buys 7 more cows at the market on Monday morning. How many cows now?"
    (folder / "train.jsonl").write_text(
        "\n".join(
            [gsm8k_row("Sam reads 4 books a week for 3 weeks. How many books?", 12), gsm8k_row(shared, 19)]
        )
    )
    (folder / "test.jsonl").write_text(
        "\n".join([gsm8k_row(shared.upper(), 19), gsm8k_row("Ann swims 5 laps daily for 6 days. Laps?", 30)])
    )
    report = run_data_stage(StudyConfig(data=DataConfig(dataset="gsm8k", path=str(folder))), tmp_path / "run")
    assert report["overlap"]["flagged"] == 1 and report["overlap"]["exact"] == 1
    (example,) = report["overlap"]["examples"]
    assert example["test_id"] == "gsm8k-test-00000" and example["train_id"] == "gsm8k-train-00001"
    assert example["containment"] == 1.0 and example["train_question"] == shared


def test_failed_stage_leaves_earlier_outputs_untouched(gsm8k_dir: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    good = StudyConfig(data=DataConfig(dataset="gsm8k", path=str(gsm8k_dir), train_limit=20, test_limit=5))
    run_data_stage(good, run_dir)
    before = {p.name: p.read_bytes() for p in (run_dir / "data").iterdir()}

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "train.jsonl").write_text(gsm8k_row("Fine question here?", 3) + "\n")
    (broken / "test.jsonl").write_text(gsm8k_row("Fine too?", 4) + '\n{"question": "No answer line?"}\n')
    with pytest.raises(UserError, match=re.escape(f"{broken.resolve() / 'test.jsonl'}:2: ")):
        run_data_stage(StudyConfig(data=DataConfig(dataset="gsm8k", path=str(broken))), run_dir)

    after = {p.name: p.read_bytes() for p in (run_dir / "data").iterdir()}
    assert after == before  # same files, same bytes, no temporaries left behind


def test_failure_while_writing_keeps_the_old_split_files(
    gsm8k_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = tmp_path / "run"
    run_data_stage(StudyConfig(data=DataConfig(dataset="gsm8k", path=str(gsm8k_dir), test_limit=3)), run_dir)
    before = {p.name: p.read_bytes() for p in (run_dir / "data").iterdir()}

    import scalingdown.data.stage as stage

    real_write = stage.write_problems

    def write_then_fail_on_test(path, problems):  # a full disk while the second file is written
        if "test" in Path(path).name:
            raise OSError(28, "No space left on device")
        return real_write(path, problems)

    monkeypatch.setattr(stage, "write_problems", write_then_fail_on_test)
    smaller = StudyConfig(data=DataConfig(dataset="gsm8k", path=str(gsm8k_dir), train_limit=5, test_limit=2))
    with pytest.raises(OSError):
        run_data_stage(smaller, run_dir)
    after = {p.name: p.read_bytes() for p in (run_dir / "data").iterdir()}
    assert after == before


def test_a_crash_between_the_renames_never_looks_done(tmp_path: Path, monkeypatch) -> None:
    """Killed after the new test.jsonl landed beside the old train.jsonl: no report, so not done."""
    import os

    from scalingdown.data import stage

    study = StudyConfig(data=DataConfig(synthetic=SyntheticConfig(n_train=30, n_test=5)))
    run_data_stage(study, tmp_path)
    assert stage.current_report(study, tmp_path) is not None
    changed = study.model_copy(update={"data": DataConfig(synthetic=SyntheticConfig(n_train=30, n_test=7))})
    real_replace, calls = os.replace, []

    def crash_on_second(src, dst):
        if Path(dst).name in ("train.jsonl", "test.jsonl"):  # the final renames, not the staging
            calls.append(dst)
            if len(calls) == 2:
                raise KeyboardInterrupt  # the process dies between them
        real_replace(src, dst)

    monkeypatch.setattr(stage.os, "replace", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        run_data_stage(changed, tmp_path)
    monkeypatch.setattr(stage.os, "replace", real_replace)
    assert not (tmp_path / "data" / "report.json").exists()
    assert stage.current_report(study, tmp_path) is None and stage.current_report(changed, tmp_path) is None
    run_data_stage(changed, tmp_path)
    assert stage.current_report(changed, tmp_path) is not None
    (tmp_path / "data" / "test.jsonl").write_text("")  # a split edited by hand: no longer done
    assert stage.current_report(changed, tmp_path) is None


def test_a_local_copy_edited_in_place_is_loaded_again(tmp_path: Path) -> None:
    from scalingdown.data.stage import current_report

    local = tmp_path / "gsm8k"
    local.mkdir()
    (local / "train.jsonl").write_text(gsm8k_row("How many?", 3) + "\n")
    (local / "test.jsonl").write_text(gsm8k_row("How few?", 1) + "\n")
    study = StudyConfig(data=DataConfig(dataset="gsm8k", path=str(local)))
    run_data_stage(study, tmp_path / "run")
    assert current_report(study, tmp_path / "run") is not None
    (local / "test.jsonl").write_text(gsm8k_row("How few?", 2) + "\n")  # a corrected gold answer
    assert current_report(study, tmp_path / "run") is None


def test_a_dev_slice_is_held_out_of_train_seeded_and_removed_with_the_setting(tmp_path: Path) -> None:
    from scalingdown.study import ensure_data

    def study(dev_size: int, seed: int = 0) -> StudyConfig:
        return StudyConfig(
            run_dir=str(tmp_path / "run"),
            seed=seed,
            data=DataConfig(dev_size=dev_size, synthetic=SyntheticConfig(n_train=50, n_test=5)),
        )

    run = tmp_path / "run"
    ensure_data(study(0))
    full = [p.id for p in load_run_problems(run, "train")]
    assert not (run / "data" / "dev.jsonl").exists()
    with pytest.raises(UserError, match="no dev slice"):
        load_run_problems(run, "dev")

    report = ensure_data(study(8))
    train = [p.id for p in load_run_problems(run, "train")]
    dev = [p.id for p in load_run_problems(run, "dev")]
    assert report["counts"] == {"train": 42, "test": 5, "dev": 8}
    assert len(dev) == 8 and not set(dev) & set(train)  # never taught or trained on
    assert sorted(train + dev) == sorted(full) and train == [i for i in full if i not in dev]  # order kept
    assert dev != full[-8:] and dev != full[:8]  # a sample, not a slice of one end
    ensure_data(study(8, seed=1))
    assert [p.id for p in load_run_problems(run, "dev")] != dev  # the seed draws another sample

    ensure_data(study(0))  # the setting removed: the whole train split again, no dev file
    assert [p.id for p in load_run_problems(run, "train")] == full
    assert not (run / "data" / "dev.jsonl").exists()
    with pytest.raises(UserError, match="data.dev_size: 50 would leave none"):
        ensure_data(study(50))


def test_no_dev_slice_keeps_the_data_key_it_had_before_the_setting_existed() -> None:
    from scalingdown.data.stage import data_key
    from scalingdown.digests import digest

    config = StudyConfig(data=DataConfig(synthetic=SyntheticConfig(n_train=50, n_test=5)))
    before = config.data.model_dump(mode="json")
    before.pop("dev_size")  # what a run made before `dev_size` recorded
    assert data_key(config) == digest([before, config.seed, None])
    with_dev = config.model_copy(update={"data": config.data.model_copy(update={"dev_size": 5})})
    assert data_key(with_dev) != data_key(config)

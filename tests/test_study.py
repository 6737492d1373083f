"""`scalingdown run` end to end on a small study: a failing student does not stop the others, and
the report marks what is missing instead of failing."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from scalingdown.artifacts import read_json
from scalingdown.config_file import parse_config
from scalingdown.data.synthetic import generate_splits
from scalingdown.errors import PartialFailure
from scalingdown.evaluate.prompts import worked_solution
from scalingdown.study import run_study

TINY = {
    "arch": "llama",
    "hidden_size": 32,
    "num_layers": 2,
    "num_heads": 2,
    "vocab_size": 320,
    "max_positions": 256,
}


def test_a_failing_student_is_reported_and_the_study_goes_on(tmp_path: Path) -> None:
    data = {
        "dataset": "synthetic",
        "synthetic": {"n_train": 120, "n_test": 12, "max_steps": 1, "max_value": 9},
    }
    study_dict = {
        "name": "mini",
        "run_dir": str(tmp_path / "run"),
        "data": data,
        "teachers": [
            {"name": "book", "backend": "replay", "model": str(tmp_path / "book.jsonl"), "num_examples": 0}
        ],
        "teach": {"free_eval_problems": 0},
        "hyperparameters": {
            "max_steps": 6,
            "batch_size": 16,
            "log_every": 3,
            "checkpoint_every": 6,
            "mixed_precision": "no",
            "max_length": 128,
        },
        "students": [
            {"name": "ok", "tiny": TINY, "method": "full", "format": "single"},
            {"name": "broken", "tiny": TINY, "method": "lora", "lora": {"target_modules": ["no_such_proj"]}},
            {"name": "reference", "tiny": {**TINY, "hidden_size": 64}, "method": "full", "teachers": []},
        ],
        "report": {"references": ["reference", "not-in-study"]},
        "eval": {"max_new_tokens": 24, "batch_size": 32, "speed_prompts": 2, "speed_passes": 1},
    }
    study = parse_config(study_dict)
    train, _ = generate_splits(study.data.synthetic, study.seed)
    # A recorded teacher that shows its work, but not always: the verdict categories count it.
    texts = [worked_solution(p) for p in train]
    for i in range(0, 20, 2):
        texts[i] = f"The answer is {train[i].answer}."  # the gold answer alone: no work
    (tmp_path / "book.jsonl").write_text(
        "".join(json.dumps({"id": p.id, "text": text}) + "\n" for p, text in zip(train, texts, strict=True))
    )
    with pytest.raises(PartialFailure) as failed:
        run_study(study)  # the failure is named at the end, after everything else ran
    assert [line.split(":")[0] for line in failed.value.failures] == ["student broken"]
    run = tmp_path / "run"
    stats = read_json(run / "teachers" / "book" / "stats.json")
    assert stats["categories"]["no_work"] == 10 and stats["categories"]["verified"] == 110 == stats["kept"]
    assert "No work" in (run / "report" / "README.md").read_text()  # the teacher table says so too
    summary = read_json(run / "students" / "summary.json")
    assert "no_such_proj" in summary["broken"]["error"]
    assert summary["ok"]["steps"] == 6 and summary["reference"]["steps"] == 6
    for name in ("ok", "reference"):
        metrics = read_json(run / "eval" / name / "metrics.json")
        assert metrics["n"] == 12
        # The dedicated speed measurement (its own process) and the int8 rung of each student.
        speed = metrics["speed"]
        assert speed["passes"] == 1 and 0 < speed["seconds_per_question_min"] <= speed["seconds_per_question"]
        assert speed["peak_memory_bytes"] > speed["baseline_rss_bytes"] > 0
        if name == "reference":  # the fixed model to beat: evaluated as trained, no quantised rung
            assert not (run / "eval" / name / "int8").exists()
            continue
        int8 = read_json(run / "eval" / name / "int8" / "metrics.json")
        assert int8["quantization"]["kind"] == "int8" and int8["n"] == 12
        assert int8["weight_bytes"] < metrics["weight_bytes"] / 2
    assert not (run / "eval" / "broken").exists()
    page = (run / "report" / "README.md").read_text()
    assert "broken" in page and "no_such_proj" in page  # marked, with its reason
    assert "not-in-study" in page
    findings = read_json(run / "report" / "findings.json")["findings"]
    assert {f["reference"] for f in findings} >= {"reference"}
    manifest = read_json(run / "manifest.json")
    assert {"data", "teach", "train", "report"} <= set(manifest["stages"])


def test_a_retrained_model_is_evaluated_again(tmp_path: Path) -> None:
    """The eval step skips a model only while its weights are the ones it measured."""
    from scalingdown.study import ensure_data, evaluate_models

    study = parse_config(
        {
            "run_dir": str(tmp_path / "run"),
            "data": {"dataset": "synthetic", "synthetic": {"n_train": 60, "n_test": 8}},
            "eval": {"max_new_tokens": 4, "batch_size": 8, "speed_prompts": 0, "quantize": []},
            "models": [{"name": "m", "tiny": TINY}],
        }
    )
    ensure_data(study)
    metrics = tmp_path / "run" / "eval" / "m" / "metrics.json"
    first = evaluate_models(study, force=False)["m"]
    written = metrics.stat().st_mtime_ns
    evaluate_models(study, force=False)
    assert metrics.stat().st_mtime_ns == written  # skipped: same weights, same settings
    model_dir = tmp_path / "run" / "models" / "m"
    record = model_dir / "tiny_build.json"
    record.write_text(record.read_text().replace('"build_seconds"', '"note": "rebuilt", "build_seconds"'))
    rerun = evaluate_models(study, force=False)["m"]
    assert rerun["spec_digest"] != first["spec_digest"] and metrics.stat().st_mtime_ns != written


def test_a_model_with_its_own_few_shot_prompt_gets_its_exemplars(tmp_path: Path) -> None:
    """The shipped studies: `eval.prompt: student` study-wide, a reference with `prompt: few-shot`."""
    from scalingdown.study import ensure_data, evaluate_models

    study = parse_config(
        {
            "run_dir": str(tmp_path / "run"),
            "data": {"dataset": "synthetic", "synthetic": {"n_train": 60, "n_test": 6}},
            "eval": {
                "prompt": "student",
                "max_new_tokens": 4,
                "batch_size": 8,
                "num_fewshot": 2,
                "speed_prompts": 0,
            },
            "models": [{"name": "ref", "tiny": TINY, "prompt": "few-shot"}],
        }
    )
    ensure_data(study)
    metrics = evaluate_models(study)["ref"]
    assert "error" not in metrics and metrics["prompt_format"] == "few-shot" and metrics["n"] == 6
    rows = [json.loads(line) for line in (tmp_path / "run" / "eval" / "ref" / "predictions.jsonl").open()]
    assert rows[0]["prompt"].count("Question:") == 3  # two worked exemplars, then the question


def test_few_shot_exemplars_can_take_a_teachers_rationales(tmp_path: Path) -> None:
    """A train split without gold rationales (SVAMP) takes its exemplars' from a teacher's kept ones;
    without `eval.fewshot_teacher` the error says so; a new rationale file is a new evaluation."""
    from scalingdown.artifacts import read_jsonl, write_jsonl
    from scalingdown.study import ensure_data, eval_key, evaluate_models

    run = tmp_path / "run"
    config = {
        "run_dir": str(run),
        "data": {"dataset": "synthetic", "synthetic": {"n_train": 30, "n_test": 4}},
        "teachers": [{"name": "book", "backend": "replay", "model": str(tmp_path / "book.jsonl")}],
        "eval": {"prompt": "few-shot", "max_new_tokens": 4, "batch_size": 8, "num_fewshot": 2},
        "models": [{"name": "ref", "tiny": TINY}],
    }
    config["eval"].update(speed_prompts=0, quantize=[])
    ensure_data(parse_config(config))
    train_file = run / "data" / "train.jsonl"
    problems = read_jsonl(train_file)
    write_jsonl(train_file, [{**p, "rationale": None} for p in problems])  # no gold rationales
    rationales = run / "teachers" / "book" / "rationales.jsonl"
    rows = [
        {
            "problem_id": p["id"],
            "teacher": "book",
            "sample": 0,
            "text": f"Work {i}.\n\nSo {p['answer']}.",
            "verified": i % 2 == 0,
        }
        for i, p in enumerate(problems)
    ]
    write_jsonl(rationales, rows)

    from scalingdown.errors import UserError

    with pytest.raises(
        UserError, match=r"found 0 \(a data set without gold rationales .*eval.fewshot_teacher"
    ):
        evaluate_models(parse_config(config))

    config["eval"]["fewshot_teacher"] = "book"
    study = parse_config(config)
    metrics = evaluate_models(study)["ref"]
    assert "error" not in metrics and metrics["n"] == 4
    prompt = read_jsonl(run / "eval" / "ref" / "predictions.jsonl")[0]["prompt"]
    shown = [int(n) for n in re.findall(r"Work (\d+)\.", prompt)]
    assert len(shown) == 2 and all(i % 2 == 0 for i in shown)  # verified ones only, blank lines collapsed
    assert "Work" in prompt and "\n\nSo" not in prompt

    before = eval_key(study.models[0], study, str(run / "models" / "ref"))
    write_jsonl(rationales, [{**r, "text": r["text"] + " Again."} for r in rows])
    assert eval_key(study.models[0], study, str(run / "models" / "ref")) != before

    # ... and is nothing to a model asked zero-shot (or a student): its key stays as it was
    zero = study.models[0].model_copy(update={"prompt": "zero-shot"})
    plain = parse_config({**config, "eval": {**config["eval"], "fewshot_teacher": None}})
    assert eval_key(zero, study, str(run / "models" / "ref")) == eval_key(
        zero, plain, str(run / "models" / "ref")
    )

    with pytest.raises(UserError, match="eval.fewshot_teacher: .nobody. is not a teacher"):
        parse_config({**config, "eval": {**config["eval"], "fewshot_teacher": "nobody"}})


def test_the_manifest_keeps_each_stage_config_and_parallel_writers(tmp_path: Path) -> None:
    """`eval` after `data --dataset gsm8k` must not record eval's defaults as the data config, and
    processes recording stages at once must not lose each other's entries."""
    import multiprocessing

    from scalingdown.manifest import update_manifest

    run = tmp_path / "run"
    gsm8k = parse_config({"run_dir": str(run), "data": {"dataset": "gsm8k", "test_limit": 5}})
    update_manifest(run, gsm8k, "data", seconds=1.0)
    defaults = parse_config({"run_dir": str(run), "eval": {"max_new_tokens": 7}})
    update_manifest(run, defaults, "eval/m", seconds=2.0)
    manifest = read_json(run / "manifest.json")
    assert (
        manifest["config"]["data"]["dataset"] == "gsm8k" and manifest["config"]["eval"]["max_new_tokens"] == 7
    )
    assert manifest["stages"]["data"]["config"]["data"]["test_limit"] == 5
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_record_stages, args=(str(run), k)) for k in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0
    stages = read_json(run / "manifest.json")["stages"]
    assert {f"eval/w{k}-{i}" for k in range(2) for i in range(15)} <= set(stages)


def _record_stages(run: str, worker: int) -> None:
    from scalingdown.manifest import update_manifest

    study = parse_config({"run_dir": run})
    for i in range(15):
        update_manifest(Path(run), study, f"eval/w{worker}-{i}", seconds=0.0)


def test_a_stage_that_found_everything_done_keeps_the_time_its_work_took(tmp_path: Path) -> None:
    from scalingdown.manifest import update_manifest

    study = parse_config({"run_dir": str(tmp_path)})
    update_manifest(tmp_path, study, "train", seconds=900.0)
    update_manifest(tmp_path, study, "train", skipped=True, seconds=0.5)
    entry = read_json(tmp_path / "manifest.json")["stages"]["train"]
    assert entry["seconds"] == 900.0 and "checked" in entry
    other = parse_config({"run_dir": str(tmp_path), "hyperparameters": {"max_steps": 3}})
    update_manifest(tmp_path, other, "train", skipped=True, seconds=0.5)  # other inputs: a new entry
    assert read_json(tmp_path / "manifest.json")["stages"]["train"]["seconds"] == 0.5


def test_quantised_rungs_only_for_the_seeds_named(tmp_path):
    from scalingdown.config_file import parse_config
    from scalingdown.layout import STUDENT_FILE, student_dir
    from scalingdown.study import student_targets

    def study(**eval_settings):
        return parse_config(
            {
                "run_dir": str(tmp_path),
                "seeds": [0, 1, 2],
                "eval": {"quantize": ["int8"], **eval_settings},
                "students": [
                    {"name": "s", "tiny": {"hidden_size": 16}},
                    {"name": "ref", "tiny": {"hidden_size": 16}, "seeds": [0]},
                ],
                "report": {"references": ["ref"]},
            }
        )

    for name, seed in (("s", 0), ("s", 1), ("s", 2), ("ref", 0)):
        folder = student_dir(str(tmp_path), name, seed)
        folder.mkdir(parents=True)
        (folder / STUDENT_FILE).write_text("{}")
    targets = student_targets(study())
    assert [(t.seed, t.quantize) for t in targets if t.spec.name == "ref"] == [(0, None)]  # not quantised
    every = [(t.seed, t.quantize) for t in targets if t.spec.name == "s"]
    assert every == [(0, None), (0, "int8"), (1, None), (1, "int8"), (2, None), (2, "int8")]
    some = [(t.seed, t.quantize) for t in student_targets(study(quantize_seeds=[0, 2])) if t.spec.name == "s"]
    assert some == [(0, None), (0, "int8"), (1, None), (2, None), (2, "int8")]


def test_artifacts_written_atomically_get_the_mode_a_plain_write_gives(tmp_path):
    import os

    from scalingdown.artifacts import write_json

    plain = tmp_path / "plain.json"
    plain.write_text("{}")
    write_json(tmp_path / "atomic.json", {"a": 1})
    assert os.stat(tmp_path / "atomic.json").st_mode & 0o777 == os.stat(plain).st_mode & 0o777


def test_speed_is_measured_once_per_student_not_per_replicate(tmp_path, monkeypatch):
    import shutil

    import scalingdown.study_eval
    from scalingdown.config import TinyModelConfig
    from scalingdown.config_file import parse_config
    from scalingdown.data.stage import load_run_problems
    from scalingdown.evaluate.prompts import worked_example
    from scalingdown.layout import STUDENT_FILE, student_dir
    from scalingdown.models.tiny import build_tiny
    from scalingdown.study import ensure_data, evaluate_models, student_targets
    from scalingdown.train.examples import student_prompt_record

    study = parse_config(
        {
            "run_dir": str(tmp_path / "run"),
            "seeds": [0, 1],
            "data": {"synthetic": {"n_train": 40, "n_test": 3}},
            "eval": {
                "prompt": "student",
                "max_new_tokens": 3,
                "quantize": [],
                "speed_prompts": 2,
                "speed_passes": 1,
            },
            "students": [{"name": "s", "tiny": {"hidden_size": 16, "num_heads": 2, "vocab_size": 300}}],
        }
    )
    ensure_data(study)
    texts = [worked_example(p) for p in load_run_problems(study.run_dir, "train")]
    tiny = TinyModelConfig(hidden_size=16, num_heads=2, vocab_size=300)
    built = build_tiny(tiny, texts, tmp_path / "built", seed=0, progress=False)
    for seed in (0, 1):
        folder = student_dir(study.run_dir, "s", seed)
        shutil.copytree(built, folder)
        (folder / STUDENT_FILE).write_text(json.dumps(student_prompt_record("multitask")))
    measured = []  # which replicates the (fresh-process, seconds-long) measurement is asked for
    monkeypatch.setattr(
        scalingdown.study_eval, "measure_target_speed", lambda *args: measured.append(args[5].seed) or {}
    )
    results = evaluate_models(study, force=False, targets=student_targets(study))
    assert measured == [0] and "speed" in results["s/seed-0"] and "speed" not in results["s/seed-1"]

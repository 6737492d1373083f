"""The eval stage end to end: files written, scores consistent, a crash resumes, outside outputs scored."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scalingdown.artifacts import read_jsonl
from scalingdown.config import EvalConfig
from scalingdown.errors import UserError
from scalingdown.evaluate import stage
from scalingdown.evaluate.prompts import worked_solution


def _settings(**kw) -> EvalConfig:
    return EvalConfig(max_new_tokens=12, batch_size=8, **kw)


def test_evaluate_model_writes_predictions_and_metrics(tiny_llama, synthetic_problems, tmp_path):
    train, test = synthetic_problems
    out = tmp_path / "eval" / "tiny"
    metrics = stage.evaluate_model(
        test, name="tiny", model_path=str(tiny_llama), settings=_settings(), out_dir=out, progress=False
    )
    rows = read_jsonl(out / "predictions.jsonl")
    assert [r["id"] for r in rows] == [p.id for p in test]
    assert {"id", "prompt", "output", "answer", "correct", "strict_answer", "strict_correct"} <= set(rows[0])
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["n"] == metrics["n"] == len(test)
    assert saved["accuracy"]["correct"] == sum(r["correct"] for r in rows)
    acc = saved["accuracy"]
    assert acc["ci_low"] <= acc["accuracy"] <= acc["ci_high"]
    assert saved["num_parameters"] > 0 and saved["peak_memory"]["bytes"] > 0
    assert saved["generated_tokens"] == sum(sum(r["new_tokens"]) for r in rows)
    assert saved["tokens_per_second"] > 0 and saved["hardware"]["cpu_count"]
    assert not (out / "predictions.partial.jsonl").exists()


def test_interrupted_evaluation_resumes_without_regenerating(tiny_llama, synthetic_problems, tmp_path):
    _, test = synthetic_problems
    out = tmp_path / "eval"
    settings = _settings()
    full = stage.evaluate_model(
        test, name="m", model_path=str(tiny_llama), settings=settings, out_dir=out, progress=False
    )
    finished = read_jsonl(out / "predictions.jsonl")
    # Simulate a crash after 10 problems: a partial file with their rows and a half-written line.
    prompts = stage.build_prompts(test, "zero-shot")
    fingerprint = stage._fingerprint(str(tiny_llama), "zero-shot", settings, prompts, test)
    partial = out / "predictions.partial.jsonl"
    kept = [{**row, "output": "resumed #### 1", "fingerprint": fingerprint} for row in finished[:10]]
    partial.write_text("".join(json.dumps(r) + "\n" for r in kept) + '{"id": "cut-off')
    (out / "metrics.json").unlink()
    again = stage.evaluate_model(
        test, name="m", model_path=str(tiny_llama), settings=settings, out_dir=out, progress=False
    )
    rows = read_jsonl(out / "predictions.jsonl")
    assert again["resumed_problems"] == 10
    assert [r["output"] for r in rows[:10]] == ["resumed #### 1"] * 10  # reused, not regenerated
    # The rest were generated anew (batches differ from the first run, so near-tied greedy steps of an
    # untrained model may differ in the last float bits: compare provenance, not text).
    assert all(r["output"] != "resumed #### 1" for r in rows[10:])
    assert [r["id"] for r in rows] == [r["id"] for r in finished]
    assert full["n"] == again["n"]


def test_a_changed_setting_discards_the_partial_file(tiny_llama, synthetic_problems, tmp_path):
    _, test = synthetic_problems
    out = tmp_path / "eval"
    (out).mkdir()
    (out / "predictions.partial.jsonl").write_text(
        json.dumps({"id": test[0].id, "output": "stale", "fingerprint": "other"}) + "\n"
    )
    metrics = stage.evaluate_model(
        test[:3], name="m", model_path=str(tiny_llama), settings=_settings(), out_dir=out, progress=False
    )
    assert metrics["resumed_problems"] == 0


def test_scoring_outputs_produced_elsewhere(synthetic_problems, tmp_path):
    _, test = synthetic_problems
    preds = tmp_path / "outside.jsonl"
    lines = [{"id": p.id, "text": worked_solution(p)} for p in test[:10]]
    lines += [{"id": p.id, "text": "I think it is 123456789."} for p in test[10:15]]
    preds.write_text("".join(json.dumps(x) + "\n" for x in lines))
    metrics = stage.score_predictions(test, preds, name="outside", out_dir=tmp_path / "eval" / "outside")
    assert metrics["accuracy"]["correct"] == 10 and metrics["n"] == 15
    assert metrics["strict_accuracy"]["correct"] == 10
    assert metrics["missing_problems"] == len(test) - 15


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"id": "x", "text": "1"\n', r"outside.jsonl:1: malformed JSON line"),
        ('{"text": "1"}\n', r"outside.jsonl:1: missing string field 'id'"),
        ('{"id": "nope", "text": "1"}\n', r"outside.jsonl:1: id 'nope' is not a test problem"),
        ("", r"outside.jsonl: no predictions"),
    ],
)
def test_bad_prediction_files_name_file_and_line(synthetic_problems, tmp_path, content, message):
    _, test = synthetic_problems
    preds = tmp_path / "outside.jsonl"
    preds.write_text(content)
    out = tmp_path / "eval"
    out.mkdir()
    (out / "metrics.json").write_text('{"kept": true}')
    with pytest.raises(UserError, match=message):
        stage.score_predictions(test, preds, name="outside", out_dir=out)
    assert json.loads((out / "metrics.json").read_text()) == {"kept": True}  # nothing already written damaged


def test_duplicate_prediction_ids_are_rejected(synthetic_problems, tmp_path):
    _, test = synthetic_problems
    preds = tmp_path / "dup.jsonl"
    preds.write_text(
        json.dumps({"id": test[0].id, "text": "1"}) + "\n" + json.dumps({"id": test[0].id, "text": "2"})
    )
    with pytest.raises(UserError, match=r"dup.jsonl:2: .* appears twice"):
        stage.score_predictions(test, preds, name="d", out_dir=tmp_path / "e")


def test_few_shot_prompts_use_train_exemplars_and_student_needs_its_file(synthetic_problems, tmp_path):
    train, test = synthetic_problems
    prompts = stage.build_prompts(test[:2], "few-shot", train_pool=train, num_fewshot=3, seed=0)
    assert prompts[0].count("Question:") == 4 and prompts[0].endswith("Answer:")
    assert prompts[0].split(test[0].question)[0] == prompts[1].split(test[1].question)[0]  # same exemplars
    with pytest.raises(UserError, match="scalingdown.json"):
        stage.build_prompts(test[:1], "student", model_path=tmp_path)
    (tmp_path / "scalingdown.json").write_text(json.dumps({"prompt_template": "Q: {question}\nA:"}))
    assert stage.build_prompts(test[:1], "student", model_path=tmp_path) == [f"Q: {test[0].question}\nA:"]


def test_self_consistency_votes(synthetic_problems):
    _, test = synthetic_problems
    p = test[0]
    wrong = str(int(p.answer) + 1)
    voted = stage.score_outputs(
        p, [f"The answer is {p.answer}.", f"The answer is {wrong}.", f"#### {p.answer}"]
    )
    assert voted["answer"] == p.answer and voted["correct"] and voted["strict_correct"]
    lost = stage.score_outputs(p, [f"The answer is {wrong}.", f"The answer is {wrong}.", p.answer])
    assert not lost["correct"]


def test_model_path_that_is_not_a_model(synthetic_problems, tmp_path):
    _, test = synthetic_problems
    (tmp_path / "notamodel").mkdir()
    with pytest.raises(UserError, match="notamodel"):
        stage.evaluate_model(
            test,
            name="x",
            model_path=str(tmp_path / "notamodel"),
            settings=_settings(),
            out_dir=tmp_path / "out",
            progress=False,
        )
    assert Path(tmp_path / "notamodel").exists()


def test_partial_rows_of_other_weights_or_other_gold_answers_are_not_reused(
    tiny_llama, synthetic_problems, tmp_path
):
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    _, test = synthetic_problems
    test = test[:4]
    model = tmp_path / "model"
    shutil.copytree(tiny_llama, model)
    settings = _settings()
    prompts = stage.build_prompts(test, "zero-shot")
    out = tmp_path / "eval"

    def interrupted_run() -> None:  # rows of the model and problems as they are now
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        fingerprint = stage._fingerprint(str(model), "zero-shot", settings, prompts, test)
        rows = [
            {"id": p.id, "output": "old", **stage.score_outputs(p, ["old"]), "fingerprint": fingerprint}
            for p in test
        ]
        (out / "predictions.partial.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    def resumed(problems) -> int:
        metrics = stage.evaluate_model(
            problems, name="m", model_path=str(model), settings=settings, out_dir=out, progress=False
        )
        return metrics["resumed_problems"]

    interrupted_run()
    assert resumed(test) == 4  # same model, same problems: reused
    interrupted_run()
    regraded = [p.model_copy(update={"answer": p.answer + "0"}) for p in test]
    assert resumed(regraded) == 0  # a corrected gold answer: the rows' verdicts are stale
    interrupted_run()
    weights = load_file(model / "model.safetensors")
    save_file({k: v + 0.01 * torch.randn_like(v) for k, v in weights.items()}, model / "model.safetensors")
    assert resumed(test) == 0  # retrained in place: nothing of the old model's output is kept


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's /proc/self/clear_refs")
def test_cpu_peak_memory_starts_again_at_reset_so_an_eval_is_not_charged_an_earlier_peak():
    import torch

    from scalingdown.evaluate.efficiency import peak_memory, reset_peak_memory

    cpu = torch.device("cpu")
    big = torch.ones(100_000_000)  # 400 MB, touched
    during = peak_memory(cpu)["bytes"]
    del big
    reset_peak_memory(cpu)
    after = peak_memory(cpu)
    assert after["kind"] == "process_peak_rss"
    assert after["bytes"] < during - 300 * 2**20


def test_a_question_asked_in_several_prompts_costs_all_of_them(tiny_llama, monkeypatch):
    """A vote's question is answered by every mode's prompt: the speed figures per question count
    them all (`prompts_per_question`), not one prompt's share."""
    import time

    import scalingdown.evaluate.generation as generation
    from scalingdown.evaluate.generation import Generation
    from scalingdown.evaluate.speed import SpeedRequest, _run

    def fake(loaded, prompts, settings, **kwargs):  # 20 ms a prompt, whatever the batch
        time.sleep(0.02 * len(prompts))
        return [Generation(texts=["x"], new_tokens=[1]) for _ in prompts]

    monkeypatch.setattr(generation, "generate_texts", fake)
    request = SpeedRequest(
        model_path=str(tiny_llama), prompts=["a", "b"] * 3, max_new_tokens=2, stop=[], passes=1
    )
    one = _run(request)
    request.prompts_per_question = 2
    voted = _run(request)
    assert voted["prompts_per_question"] == 2
    assert voted["seconds_per_question"] == pytest.approx(2 * one["seconds_per_question"], rel=0.3)
    assert voted["questions_per_second_batched"] == pytest.approx(
        one["questions_per_second_batched"] / 2, rel=0.3
    )


def test_a_vote_student_is_timed_on_every_modes_prompt(tmp_path, monkeypatch):
    import scalingdown.evaluate.speed as speed
    from scalingdown.config import ModelConfig
    from scalingdown.config_file import parse_config
    from scalingdown.data.synthetic import generate
    from scalingdown.study_eval import EvalTarget, measure_target_speed
    from scalingdown.train.examples import student_prompt_record

    student = tmp_path / "student"
    student.mkdir()
    modes = ["answer", "rationale:a", "rationale:b"]
    (student / "scalingdown.json").write_text(json.dumps(student_prompt_record("multitask", modes)))
    study = parse_config({"run_dir": str(tmp_path / "run"), "eval": {"speed_prompts": 4}})
    asked = []
    monkeypatch.setattr(speed, "measure_speed", lambda request: asked.append(request) or {})
    test = generate(6, seed=0, split="test")
    target = EvalTarget(ModelConfig(name="s", path=str(student), prompt="student"))
    measure_target_speed(study, str(student), test, [], "student", target, "vote")
    measure_target_speed(study, str(student), test, [], "student", target, "rationale:b")
    vote, one = asked
    assert len(vote.prompts) == 12 and vote.prompts_per_question == 3
    assert len(one.prompts) == 4 and one.prompts_per_question == 1 and "Rationale:" in one.prompts[0]

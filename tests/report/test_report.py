"""The report stage end to end on a run directory built here: four students, one reference, two
teachers, with per-problem outcomes chosen so the answer is known in advance."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from scalingdown.artifacts import write_json, write_jsonl
from scalingdown.config import (
    ModelConfig,
    PublishedScore,
    ReportConfig,
    StudentConfig,
    StudyConfig,
    TeacherConfig,
    TinyModelConfig,
)
from scalingdown.errors import UserError
from scalingdown.evaluate.paired import mcnemar_exact
from scalingdown.evaluate.stage import summarize
from scalingdown.report.stage import run_report_stage

N = 200
IDS = [f"test-{i:04d}" for i in range(N)]
# The reference gets problems 0..99 right (50%). Each student gets a prefix of those and a run of
# the reference's misses, so the discordant counts (b, c) are known by construction.
REFERENCE = ("ref", 10_000_000, set(range(100)))
STUDENTS = {  # name: (parameters, problems right, teachers)
    "s-tiny": (100_000, set(range(80)), ["t-a", "t-b"]),  # 40%: b=0, c=20
    "s-small": (500_000, set(range(90)) | set(range(100, 134)), ["t-a", "t-b"]),  # 62%: b=34, c=10
    "s-mid": (2_000_000, set(range(95)) | set(range(100, 145)), ["t-a", "t-b"]),  # 70%
    "s-big": (20_000_000, set(range(100)) | set(range(100, 150)), ["t-a"]),  # 75%
}


def _eval(run_dir: Path, name: str, parameters: int, right: set[int], ms: float) -> None:
    rows = [
        {
            "id": pid,
            "output": "The answer is 1",
            "answer": "1",
            "correct": i in right,
            "strict_correct": i in right and i % 3 != 0,
            "gold": "1",
            "new_tokens": [12],
            "seconds": ms / 1000,
        }
        for i, pid in enumerate(IDS)
    ]
    metrics = {
        "model": name,
        "prompt_format": "student",
        **summarize(rows),
        "num_parameters": parameters,
        "peak_memory": {"bytes": parameters * 4 + 50 * 2**20, "kind": "process_max_rss"},
    }
    write_jsonl(run_dir / "eval" / name / "predictions.jsonl", rows)
    write_json(run_dir / "eval" / name / "metrics.json", metrics)


def build_fake_run(run_dir: Path) -> StudyConfig:
    """A run directory as the stages leave it, and the study config that names its models."""
    ref_name, ref_params, ref_right = REFERENCE
    _eval(run_dir, ref_name, ref_params, ref_right, ms=90.0)
    for k, (name, (params, right, teachers)) in enumerate(STUDENTS.items()):
        _eval(run_dir, name, params, right, ms=5.0 * (k + 1))
        write_json(
            run_dir / "students" / name / "scalingdown.json",
            {
                "student": name,
                "teachers": teachers,
                "format": "multitask",
                "steps": 100 * (k + 1),
                "final_loss": 1.0 / (k + 1),
                "tokens_per_second": 1000.0,
                "train_seconds": 30.0 * (k + 1),
                "total_parameters": params,
                "trainable_parameters": params // 10,
            },
        )
    write_json(
        run_dir / "models" / ref_name / "tiny_build.json",
        {"num_parameters": ref_params, "pretrain_losses": [3.0] * 600, "build_seconds": 120.0},
    )
    for name, kept, free_right in (("t-a", 180, 40), ("t-b", 120, 25)):
        folder = run_dir / "teachers" / name
        write_json(
            folder / "stats.json",
            {
                "teacher": name,
                "backend": "hf",
                "model": f"models/{name}",
                "mode": "teacher-forcing",
                "questions": 200,
                "rationales": 200,
                "kept": kept,
                "kept_share": kept / 200,
                "verified": kept - 10,
                "verified_share": (kept - 10) / 200,
                "wrong_answer": 200 - kept,
                "arithmetic_error_rationales": 10,
                # t-b's stats.json predates the verdict categories: the report must still read it
                **(
                    {
                        "categories": {
                            "verified": kept - 10,
                            "wrong_answer": 200 - kept,
                            "arithmetic_error": 4,
                            "no_work": 3,
                            "inconsistent_chain": 2,
                            "program_failed": 1,
                        }
                    }
                    if name == "t-a"
                    else {}
                ),
                "free_accuracy": {
                    "correct": free_right,
                    "n": 50,
                    "accuracy": free_right / 50,
                    "ci_low": free_right / 50 - 0.12,
                    "ci_high": free_right / 50 + 0.12,
                    "confidence": 0.95,
                    "failed": 0,
                },
                "seconds": 60.0,
            },
        )
        write_json(
            folder / "usage.json",
            {
                "rationales": {"cost": 0.0, "prompt_tokens": 20_000, "completion_tokens": 8_000, "failed": 0},
                "free_mode": {"cost": 0.0},
                "cost": 0.0,
            },
        )
        write_jsonl(
            folder / "free.jsonl",
            [{"problem_id": pid, "correct": i < free_right, "error": None} for i, pid in enumerate(IDS[:50])],
        )
    write_json(run_dir / "manifest.json", {"stages": {"data": {"seconds": 2.0}, "teach": {"seconds": 60.0}}})
    tiny = TinyModelConfig()
    return StudyConfig(
        name="fake <study>",
        run_dir=str(run_dir),
        models=[ModelConfig(name=ref_name, tiny=tiny)],
        teachers=[TeacherConfig(name=t, backend="hf", model=f"models/{t}") for t in ("t-a", "t-b")],
        students=[StudentConfig(name=name, tiny=tiny) for name in STUDENTS],
    )


SETTINGS = ReportConfig(references=["ref"], alpha=0.05, test="mcnemar", bootstrap_samples=1000)


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    study = build_fake_run(tmp_path_factory.mktemp("run"))
    return run_report_stage(study, settings=SETTINGS)


def test_report_files_exist(report: Path) -> None:
    folder = report.parent
    assert report.name == "index.html" and folder.name == "report"
    for name in ("index.html", "README.md", "results.csv", "findings.json"):
        assert (folder / name).is_file()
    pngs = sorted(p.name for p in (folder / "plots").glob("*.png"))
    assert pngs == sorted(
        f"{n}.png"
        for n in (
            "accuracy_vs_parameters",
            "accuracy_vs_latency",
            "cost_vs_accuracy",
            "teacher_statistics",
            "teacher_ablation",
        )
    )
    for png in (folder / "plots").glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(folder.parent.glob(".report.*"))  # no temporary directory left behind


def test_finding_names_the_smallest_student_that_beats_the_reference(report: Path) -> None:
    readme = (report.parent / "README.md").read_text(encoding="utf-8")
    statement = next(line for line in readme.splitlines() if "smallest student that beats ref" in line)
    # Down the ladder: s-big, s-mid and s-small (62% vs 50%, 34 wins and 10 losses) win, s-tiny (40%)
    # loses, so s-small is the smallest winner, 10M/500K = 20x.
    assert "is s-small (500K params, 20.0x smaller)" in statement
    assert "+12.0 points" in statement and "n = 200" in statement
    assert "one-sided p < 0.001, 1 seed" in statement  # the sampled p at its floor (exact: 1.9e-4)
    assert "The next smaller, s-tiny, did not win" in statement
    ci = re.search(r"95% CI ([+-][\d.]+)\.\.([+-][\d.]+)", statement)
    assert ci and float(ci.group(1)) < 12.0 < float(ci.group(2))
    # The reference's budget is stated.
    assert "Budget of ref: 10M params, 600 training steps, 120 s" in readme


def test_the_teacher_table_counts_each_verdict_category(report: Path) -> None:
    readme = (report.parent / "README.md").read_text(encoding="utf-8")
    header = next(line for line in readme.splitlines() if line.startswith("| Teacher"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    rows = {}
    for line in readme.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells and cells[0] in ("t-a", "t-b") and len(cells) == len(columns):
            rows[cells[0]] = dict(zip(columns, cells, strict=True))
    wanted = ("Wrong answer", "Arithmetic error", "No work", "Inconsistent chain", "Program failed")
    assert [rows["t-a"][c] for c in wanted] == ["20", "4", "3", "2", "1"]
    # Without categories: rationales with an arithmetic error, and no figure for the newer categories.
    assert [rows["t-b"][c] for c in wanted] == ["80", "10", "-", "-", "-"]


def test_results_csv_has_one_row_per_model_with_every_number(report: Path) -> None:
    with (report.parent / "results.csv").open(encoding="utf-8") as handle:
        rows = {row["name"]: row for row in csv.DictReader(handle)}
    assert set(rows) >= {"ref", "t-a", "t-b", *STUDENTS}
    small = rows["s-small"]
    assert (
        small["kind"] == "student" and rows["ref"]["kind"] == "reference" and rows["t-a"]["kind"] == "teacher"
    )
    assert int(small["parameters"]) == 500_000 and int(small["n"]) == N and int(small["correct"]) == 124
    assert float(small["accuracy"]) == pytest.approx(0.62)
    assert float(small["ci_low"]) < 0.62 < float(small["ci_high"])
    assert float(small["diff_vs_ref"]) == pytest.approx(0.12)
    assert mcnemar_exact(34, 10) / 2 < float(small["p_vs_ref"]) == pytest.approx(1 / 1001)
    assert float(small["train_seconds"]) == 60.0 and int(small["train_tokens"]) == 60_000
    assert float(small["teacher_tokens"]) == 56_000  # both teachers' rationale tokens
    assert rows["t-a"]["source"] == "teacher free mode" and int(rows["t-a"]["n"]) == 50


def test_html_is_self_contained_with_one_embedded_image_per_plot(report: Path) -> None:
    page = report.read_text(encoding="utf-8")
    images = re.findall(r"<img\b[^>]*>", page)
    assert len(images) == len(list((report.parent / "plots").glob("*.png"))) == 5
    assert all('src="data:image/png;base64,' in tag for tag in images)
    targets = re.findall(r"""\b(?:src|href)\s*=\s*["']?([^"'\s>]*)""", page)
    assert targets and all(t.startswith(("data:", "#")) for t in targets)  # no external resource
    assert "http://" not in page and "https://" not in page and "<link" not in page
    assert "fake &lt;study&gt;" in page and "fake <study>" not in page  # user text is escaped
    # The findings come before the table, the table before the plots.
    assert page.index('id="findings"') < page.index('id="models"') < page.index('id="plots"')
    for n_ci in re.findall(r"\d+\.\d% \(n=\d+, 95% CI [\d.]+-[\d.]+\)", page):
        assert "n=" in n_ci
    assert page.count("(n=200, 95% CI") >= 5  # every evaluated model's accuracy has its n and CI


def test_missing_pieces_are_marked_not_fatal(tmp_path: Path) -> None:
    study = build_fake_run(tmp_path)
    (tmp_path / "eval" / "s-mid" / "predictions.jsonl").unlink()
    (tmp_path / "eval" / "s-small" / "metrics.json").write_text("{broken", encoding="utf-8")
    (tmp_path / "teachers" / "t-b" / "usage.json").unlink()
    for p in (tmp_path / "teachers").rglob("stats.json"):
        p.unlink()
    study.students.append(StudentConfig(name="s-failed", tiny=TinyModelConfig()))
    write_json(
        tmp_path / "students" / "summary.json",
        {"s-failed": {"student": "s-failed", "error": "out of memory"}},
    )
    settings = SETTINGS.model_copy(update={"references": ["ref", "ghost"]})
    index = run_report_stage(study, settings=settings)
    readme = (index.parent / "README.md").read_text(encoding="utf-8")
    missing = readme.split("## Missing", 1)[1]
    assert "eval/s-mid/predictions.jsonl not found" in missing
    assert "eval/s-small/metrics.json unreadable" in missing
    assert "training failed: out of memory" in missing
    assert "reference 'ghost' is not a model, student or teacher of this study" in missing
    assert "plot teacher_statistics: not drawn" in missing
    assert "ghost: no comparison possible" in readme
    # s-mid has no per-problem outcomes, so the sequence stops there: s-big, above it, is the finding,
    # and s-small (which would win on its own) is not tested.
    assert "the smallest student that beats ref is s-big" in readme
    page = index.read_text(encoding="utf-8")
    assert page.count("<img ") == 4  # the teacher statistics plot is skipped, and the page says why
    assert "not drawn - no teacher statistics" in page


def test_a_run_directory_that_does_not_exist_is_a_user_error(tmp_path: Path) -> None:
    study = StudyConfig(run_dir=str(tmp_path / "nowhere"))
    with pytest.raises(UserError, match="run directory not found"):
        run_report_stage(study, settings=SETTINGS)


def test_rerun_replaces_the_report(tmp_path: Path) -> None:
    study = build_fake_run(tmp_path)
    first = run_report_stage(study, settings=SETTINGS)
    (first.parent / "stale.txt").write_text("old", encoding="utf-8")
    second = run_report_stage(study, settings=SETTINGS.model_copy(update={"references": []}))
    assert second == first and not (second.parent / "stale.txt").exists()
    assert "nothing to beat" in second.read_text(encoding="utf-8")


def test_an_empty_run_directory_gives_a_report_that_says_what_is_missing(tmp_path: Path) -> None:
    tiny = TinyModelConfig()
    study = StudyConfig(
        run_dir=str(tmp_path),
        models=[ModelConfig(name="ref", tiny=tiny)],
        teachers=[TeacherConfig(name="t-a", backend="hf", model="models/t-a")],
        students=[StudentConfig(name="s1", tiny=tiny)],
    )
    index = run_report_stage(study, settings=SETTINGS)
    page = index.read_text(encoding="utf-8")
    assert "<img" not in page and page.count("not drawn - ") == 5
    assert "ref: no comparison possible" in page
    readme = (index.parent / "README.md").read_text(encoding="utf-8")
    assert "eval/s1/metrics.json not found (the model was not evaluated)" in readme
    assert "students/s1/scalingdown.json not found (not trained)" in readme
    assert "teachers/t-a/stats.json not found" in readme
    with (index.parent / "results.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["name"] for r in rows] == ["s1", "ref"] and all(r["accuracy"] == "" for r in rows)


def test_an_evaluation_of_another_test_set_stays_out_of_the_report(tmp_path: Path) -> None:
    """A model evaluated before data/test.jsonl changed (and not evaluated again) is marked stale:
    its accuracy is not compared with the current gold answers."""
    from scalingdown.digests import file_digest
    from scalingdown.report.collect import collect_run

    study = build_fake_run(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "test.jsonl").write_text('{"id": "now"}\n')
    current = file_digest(tmp_path / "data" / "test.jsonl")
    for name in ("ref", *STUDENTS):
        path = tmp_path / "eval" / name / "metrics.json"
        metrics = json.loads(path.read_text())
        metrics["test_digest"] = current if name != "s-small" else "0123456789abcdef"
        write_json(path, metrics)
    records = collect_run(study, ["ref"])
    stale = records.model("s-small")
    assert stale.accuracy is None and not stale.predictions
    assert any("is stale (data/test.jsonl changed since)" in note for note in stale.missing)
    assert records.model("s-mid").accuracy is not None and records.model("ref").accuracy is not None


def test_a_published_accuracy_is_shown_beside_the_measured_one(tmp_path: Path) -> None:
    study = build_fake_run(tmp_path)
    published = PublishedScore(value=1.4, setting="5-shot, lighteval", source="model card")
    study.models[0] = study.models[0].model_copy(update={"published": published})
    index = run_report_stage(study, settings=SETTINGS)
    cell = "published: 1.4% (5-shot, lighteval; model card)"

    readme = (index.parent / "README.md").read_text(encoding="utf-8")
    header = next(line for line in readme.splitlines() if line.startswith("| Model |"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    at = columns.index("Accuracy (n, 95% CI)")
    assert columns[at + 1] == "Published accuracy"
    models_table = readme.split("## Models", 1)[1].split("\n## ", 1)[0]  # not the costs table below it
    rows = {
        r.split("|")[1].strip(): [c.strip() for c in r.strip("|").split("|")]
        for r in models_table.splitlines()
        if r.startswith("| ") and not r.startswith("| Model")
    }
    assert rows["ref"][at].startswith("50.0% (n=200, 95% CI") and rows["ref"][at + 1] == cell
    assert rows["s-small"][at + 1] == "-"
    assert "harnesses move a model's accuracy by 15-30 points" in readme

    page = index.read_text(encoding="utf-8")
    ref_row = re.search(r'<tr class="reference">(.*?)</tr>', page).group(1)
    cells = re.findall(r"<td>(.*?)</td>", ref_row)
    assert cells[at].startswith("50.0% (n=200, 95% CI") and cells[at + 1] == cell

    with (index.parent / "results.csv").open(encoding="utf-8") as handle:
        by_name = {row["name"]: row for row in csv.DictReader(handle)}
    assert float(by_name["ref"]["published_accuracy"]) == pytest.approx(0.014)
    assert by_name["ref"]["published_setting"] == "5-shot, lighteval"
    assert by_name["ref"]["published_source"] == "model card"
    assert by_name["s-small"]["published_accuracy"] == ""


def test_without_published_figures_the_table_has_no_published_column(report: Path) -> None:
    readme = (report.parent / "README.md").read_text(encoding="utf-8")
    assert "Published accuracy" not in readme and "published:" not in report.read_text(encoding="utf-8")

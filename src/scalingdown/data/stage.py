"""The `data` stage: load the configured problems, check train/test overlap, write them to the run.

Outputs under `run_dir/data/`:
- `train.jsonl`, `test.jsonl`: one `Problem` a line (limits applied);
- `dev.jsonl` (only with `data.dev_size`): a seeded sample of the train split held out of it, never
  taught or trained on, where `eval.student_mode: select` chooses a student's inference mode;
- `report.json`: `{dataset, source, counts {train, test}, overlap {ngram, threshold, flagged, exact,
  examples}, seconds}`, the stage's record and its completion mark.

Crash safety: everything is loaded and checked before the first byte is written; the three files are
then written in full under temporary names, the old report (the completion mark) is removed, the
splits are renamed into place and the new report lands last. A failure while loading leaves what an
earlier run wrote untouched; a crash between the renames leaves no report, so nothing looks done.

"Done" (`current_report`) means: a report whose `config_digest` is this config's `data_key` (the data
config, the seed and, for a local copy, a fingerprint of its files) and whose recorded digests of
`train.jsonl` and `test.jsonl` are those of the files on disk.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from scalingdown.artifacts import read_json, write_json
from scalingdown.config import StudyConfig
from scalingdown.data.overlap import find_overlaps
from scalingdown.data.schema import Problem, read_problems, write_problems
from scalingdown.data.sources import load_data
from scalingdown.digests import digest, file_digest, tree_fingerprint
from scalingdown.errors import UserError

DATA_DIR = "data"
SPLIT_FILES = {"train": "train.jsonl", "test": "test.jsonl"}
DEV_FILE = "dev.jsonl"  # the held-out slice of train (`data.dev_size`); absent without one
REPORT_FILE = "report.json"
EXAMPLES_IN_REPORT = 10


def data_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / DATA_DIR


def data_key(config: StudyConfig) -> str:
    """What the data stage's output depends on: the data config, the seed and a local copy's files
    (an edited local file makes a new key; a Hub data set is keyed by its name and settings)."""
    source = tree_fingerprint(config.data.path) if config.data.path else None
    # Without a dev slice the key is the one it was before `dev_size` existed (nothing reruns).
    settings = config.data.model_dump(mode="json", exclude=None if config.data.dev_size else {"dev_size"})
    return digest([settings, config.seed, source])


def split_digests(run_dir: str | Path) -> dict[str, str | None]:
    """sha256 digests of the split files as they are on disk now."""
    out = data_dir(run_dir)
    digests = {split: file_digest(out / name) for split, name in SPLIT_FILES.items()}
    if (out / DEV_FILE).is_file():
        digests["dev"] = file_digest(out / DEV_FILE)
    return digests


def hold_out_dev(train: list[Problem], size: int, seed: int) -> tuple[list[Problem], list[Problem]]:
    """(train without the dev slice, the dev slice): `size` problems sampled with `seed`, both lists
    in the original order."""
    if size >= len(train):
        raise UserError(f"data.dev_size: {size} would leave none of the {len(train)} train problems to learn")
    held = set(random.Random(f"dev-{seed}").sample(range(len(train)), size))
    return [p for i, p in enumerate(train) if i not in held], [train[i] for i in sorted(held)]


def current_report(config: StudyConfig, run_dir: str | Path) -> dict | None:
    """The data report when the stage is done for exactly this config and these files, else None."""
    path = data_dir(run_dir) / REPORT_FILE
    if not path.is_file():
        return None
    try:
        report = read_json(path)
    except UserError:
        return None  # unreadable: the stage runs again and rewrites it
    if not isinstance(report, dict) or report.get("config_digest") != data_key(config):
        return None
    if report.get("split_digests") != split_digests(run_dir):
        return None
    return report


def run_data_stage(config: StudyConfig, run_dir: str | Path, *, console: Any = None) -> dict[str, Any]:
    """Write `data/{train,test}.jsonl` and `data/report.json` for `config`; return the report."""
    start = time.perf_counter()
    settings = config.data
    loaded = load_data(settings, config.seed)
    if not loaded.train or not loaded.test:
        raise UserError(
            f"data.dataset: {settings.dataset} gave {len(loaded.train)} train and {len(loaded.test)} test "
            "problems; both splits need at least one"
        )
    overlaps = find_overlaps(
        loaded.train, loaded.test, n=settings.overlap_ngram, threshold=settings.overlap_threshold
    )
    train, dev = loaded.train, []
    if settings.dev_size:
        train, dev = hold_out_dev(loaded.train, settings.dev_size, config.seed)
    questions = {p.id: p.question for p in (*loaded.train, *loaded.test)}
    examples = [
        {**asdict(o), "test_question": questions[o.test_id], "train_question": questions[o.train_id]}
        for o in overlaps[:EXAMPLES_IN_REPORT]
    ]
    report: dict[str, Any] = {
        "dataset": settings.dataset,
        "source": loaded.source,
        "counts": {"train": len(train), "test": len(loaded.test), **({"dev": len(dev)} if dev else {})},
        "overlap": {
            "ngram": settings.overlap_ngram,
            "threshold": settings.overlap_threshold,
            "flagged": len(overlaps),
            "exact": sum(o.exact for o in overlaps),
            "examples": examples,
        },
    }

    out = data_dir(run_dir)
    files = {**SPLIT_FILES, **({"dev": DEV_FILE} if dev else {})}
    staged = {split: out / f".{name}.staged" for split, name in files.items()}
    try:
        write_problems(staged["train"], train)
        write_problems(staged["test"], loaded.test)
        if dev:
            write_problems(staged["dev"], dev)
        # The old report goes first: between the renames below a crash may mix old and new splits,
        # and without a report that mix never counts as done. The new report lands last.
        (out / REPORT_FILE).unlink(missing_ok=True)
        if not dev:
            (out / DEV_FILE).unlink(missing_ok=True)
        for split, name in files.items():
            os.replace(staged[split], out / name)
    finally:
        for path in staged.values():
            path.unlink(missing_ok=True)
    report["config_digest"] = data_key(config)
    report["split_digests"] = split_digests(run_dir)
    report["seconds"] = round(time.perf_counter() - start, 3)
    write_json(out / REPORT_FILE, report)

    if console is not None:
        console.print(
            f"data: {settings.dataset} from {loaded.source}: "
            f"{len(train)} train{f' (+{len(dev)} dev)' if dev else ''}, {len(loaded.test)} test; "
            f"{len(overlaps)} test questions overlap train (n={settings.overlap_ngram}, "
            f">= {settings.overlap_threshold:.0%}), {report['overlap']['exact']} exact -> {out}"
        )
    return report


def is_data_stage_done(run_dir: str | Path) -> bool:
    """True when the stage finished: both split files and the report exist."""
    out = data_dir(run_dir)
    return all((out / name).is_file() for name in (*SPLIT_FILES.values(), REPORT_FILE))


def load_run_problems(run_dir: str | Path, split: str) -> list[Problem]:
    """The problems the data stage wrote for `split` ('train', 'test' or 'dev')."""
    files = {**SPLIT_FILES, "dev": DEV_FILE}
    if split not in files:
        raise UserError(f"split must be one of {', '.join(files)}, got {split!r}")
    path = data_dir(run_dir) / files[split]
    if split == "dev" and not path.is_file():
        raise UserError("no dev slice in this run: set data.dev_size and run `scalingdown data`", path=path)
    if not path.is_file():
        raise UserError(f"no {split} problems here: run `scalingdown data` first", path=path)
    return read_problems(path)

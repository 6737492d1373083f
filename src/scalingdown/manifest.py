"""`manifest.json`: what a run directory was made from and how long each stage took.

It holds the config, package versions, the git commit of the code, seeds, hardware, and one entry
per stage (seconds, cost, when it finished, and the config sections it consumed). Each stage updates
it when it ends, under a lock (parallel jobs on one run directory do not lose each other's entries),
and changes only the config sections it consumed: `scalingdown eval` after `scalingdown data
--dataset gsm8k` records its eval settings without overwriting the data config with eval's defaults.
"""

from __future__ import annotations

import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from scalingdown.artifacts import update_json
from scalingdown.config import StudyConfig
from scalingdown.errors import redact_tree

# The config sections each stage reads (a stage name "eval/<model>" counts as "eval").
STAGE_SECTIONS = {
    "data": ("name", "run_dir", "seed", "data"),
    "teach": ("teachers", "teach"),
    "train": ("students", "lora", "hyperparameters"),
    "eval": ("eval", "models"),
    "report": ("report",),
}


def git_commit() -> str | None:
    """The commit of the scalingdown source tree, when it runs from a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() + ("-dirty" if dirty else "")


def update_manifest(
    run_dir: Path, study: StudyConfig, stage: str, *, skipped: bool = False, **entry: Any
) -> dict:
    """Record one finished stage (seconds, cost, ...) with its config sections, versions and hardware.
    A stage that found everything done (`skipped`) keeps the seconds of the run that did the work."""
    from scalingdown.evaluate.efficiency import hardware, package_versions

    config = redact_tree(study.model_dump(mode="json"))  # no URL credentials in a file people share
    sections = STAGE_SECTIONS.get(stage.split("/", 1)[0], tuple(config))
    consumed = {key: config[key] for key in sections if key in config}

    def record(manifest: dict) -> None:
        merged = manifest.get("config") if isinstance(manifest.get("config"), dict) else {}
        manifest.update(
            {
                "config": {**merged, **consumed},
                "seed": study.seed,
                "versions": package_versions(
                    ("scalingdown", "torch", "transformers", "tokenizers", "datasets", "peft", "accelerate")
                ),
                "git_commit": git_commit(),
                "hardware": hardware(),
            }
        )
        stages = manifest.setdefault("stages", {})
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        before = stages.get(stage) if isinstance(stages.get(stage), dict) else {}
        if skipped and before.get("config") == consumed and "seconds" in before:
            # Nothing was redone: the stage's time stays the time its work took, not the check's.
            stages[stage] = {**before, "checked": now}
            return
        stages[stage] = {**entry, "seed": study.seed, "config": consumed, "finished": now}

    return update_json(run_dir / "manifest.json", record)

"""`manifest.json`: what a run directory was made from and how long each stage took.

It holds the merged config, package versions, the git commit of the code, seeds, hardware, and one
entry per stage (seconds, cost, when it finished). Each stage updates it atomically when it ends.
"""

from __future__ import annotations

import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from scalingdown.artifacts import read_json, write_json
from scalingdown.config import StudyConfig


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


def update_manifest(run_dir: Path, study: StudyConfig, stage: str, **entry: Any) -> dict:
    """Record one finished stage (seconds, cost, ...) with the run's config, versions and hardware."""
    from scalingdown.evaluate.efficiency import hardware, package_versions

    path = run_dir / "manifest.json"
    manifest = read_json(path) if path.exists() else {}
    manifest.update(
        {
            "config": study.model_dump(mode="json"),
            "seed": study.seed,
            "versions": package_versions(("scalingdown", "torch", "transformers", "tokenizers", "datasets")),
            "git_commit": git_commit(),
            "hardware": hardware(),
        }
    )
    stages = manifest.setdefault("stages", {})
    stages[stage] = {**entry, "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    write_json(path, manifest)
    return manifest

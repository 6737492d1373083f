"""Where a run directory keeps each artifact, in one place every stage imports.

A student trained once per seed (a *replicate*) lives in a folder per seed; a study that names no
`seeds` keeps the single-run layout, so existing runs read as before:

    students/<name>/                    one run (no `seeds` in the config), seed = `seed`
    students/<name>/seed-<s>/           replicate s (with `seeds: [...]`)
    eval/<name>/[seed-<s>/]             its predictions.jsonl and metrics.json
    checkpoints/<name>/[seed-<s>/]      its resumable training state
    students/.base/<name>/[seed-<s>/]   a tiny base model built for it (initialised with seed s)

Models that are not trained here (references from `models:`) have one evaluation, `eval/<name>/`.
"""

from __future__ import annotations

from pathlib import Path

STUDENT_FILE = "scalingdown.json"  # written by `scalingdown train`; the student's metadata
SEED_PREFIX = "seed-"


def replicate_seeds(study, spec) -> list[int | None]:
    """The seeds a student is trained with: its own `seeds`, else the study's, else [None], which
    means one run with the study's `seed` in the single-run layout."""
    seeds = spec.seeds if getattr(spec, "seeds", None) is not None else study.seeds
    return list(seeds) if seeds is not None else [None]


def effective_seed(study, seed: int | None) -> int:
    return study.seed if seed is None else seed


def _below(folder: Path, seed: int | None) -> Path:
    return folder if seed is None else folder / f"{SEED_PREFIX}{seed}"


def student_dir(run_dir: str | Path, name: str, seed: int | None = None) -> Path:
    return _below(Path(run_dir) / "students" / name, seed)


def eval_dir(run_dir: str | Path, name: str, seed: int | None = None) -> Path:
    return _below(Path(run_dir) / "eval" / name, seed)


def checkpoint_dir(run_dir: str | Path, name: str, seed: int | None = None) -> Path:
    return _below(Path(run_dir) / "checkpoints" / name, seed)


def tiny_base_dir(run_dir: str | Path, name: str, seed: int | None = None) -> Path:
    return _below(Path(run_dir) / "students" / ".base" / name, seed)


def replicate_label(name: str, seed: int | None) -> str:
    """How messages and summaries name a replicate: `s` or `s/seed-1`."""
    return name if seed is None else f"{name}/{SEED_PREFIX}{seed}"


def seed_folders(folder: Path) -> list[tuple[int, Path]]:
    """The `seed-<s>` folders below `folder`, by seed."""
    found = []
    for child in folder.iterdir() if folder.is_dir() else []:
        suffix = child.name.removeprefix(SEED_PREFIX)
        if child.is_dir() and child.name.startswith(SEED_PREFIX) and suffix.lstrip("-").isdigit():
            found.append((int(suffix), child))
    return sorted(found)

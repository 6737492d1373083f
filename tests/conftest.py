"""Shared fixtures: the real data sets in ../shared/data (skipped with a reason where missing)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def shared_path(*parts: str) -> Path:
    """A path under ../shared/data, or skip the test with a clear reason."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not found at {path} (the project reads ../shared/data beside the repo)")
    return path


@pytest.fixture
def gsm8k_dir() -> Path:
    return shared_path("gsm8k")


@pytest.fixture
def aqua_dir() -> Path:
    return shared_path("aqua_rat")


@pytest.fixture
def teacher_samples() -> Path:
    return shared_path("teacher_samples", "gsm8k_llm_rationales.json")


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run fastest on one thread; two threads on a busy 2-core machine thrash.

    Modules of tiny-model tests opt in with `pytestmark = pytest.mark.usefixtures("one_torch_thread")`.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

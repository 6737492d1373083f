"""Progress in a log (stderr not a terminal): plain lines at the start, every N seconds, at the end."""

from __future__ import annotations

import io

from scalingdown.progress import Progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_when_not_a_terminal(monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    monkeypatch.setenv("SCALINGDOWN_PROGRESS_SECONDS", "0")
    log = io.StringIO()
    with Progress(4, "eval ref", unit="prompts", stream=log) as bar:
        for _ in range(4):
            bar.update(1)
            bar.set_postfix(loss="1.000")
    lines = log.getvalue().splitlines()
    assert lines[0] == "eval ref: 0/4 prompts (0%), started"
    assert (
        lines[2].startswith("eval ref: 2/4 prompts (50%), ")
        and "left" in lines[2]
        and "loss=1.000" in lines[2]
    )
    assert lines[-1].startswith("eval ref: 4/4 prompts (100%), done") and len(lines) == 6
    assert "\r" not in log.getvalue()


def test_lines_are_spaced_by_the_interval_and_silenced_on_request(monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    monkeypatch.setenv("SCALINGDOWN_PROGRESS_SECONDS", "3600")
    log = io.StringIO()
    with Progress(100, "train s", unit="steps", stream=log) as bar:
        bar.update(100)
    assert len(log.getvalue().splitlines()) == 2  # started, done: nothing in between within an hour
    monkeypatch.setenv("TQDM_DISABLE", "1")
    quiet = io.StringIO()
    with Progress(3, "x", stream=quiet) as bar:
        bar.update(3)
    assert quiet.getvalue() == ""
    stopped = io.StringIO()
    monkeypatch.delenv("TQDM_DISABLE")
    with Progress(3, "x", stream=stopped) as bar:
        bar.update(1)
    assert stopped.getvalue().splitlines()[-1].startswith("x: 1/3 it (33%), stopped")


def test_a_terminal_gets_a_bar(monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    screen = _Terminal()
    with Progress(2, "teach t", unit="questions", stream=screen) as bar:
        bar.update(2)
    assert "\r" in screen.getvalue() and "teach t" in screen.getvalue()

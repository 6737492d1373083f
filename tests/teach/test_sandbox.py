"""The program sandbox: what the allow-list refuses, what runs, and hostile programs that harm nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from scalingdown.teach import sandbox as sandbox_module
from scalingdown.teach.sandbox import Sandbox, check_program, program_source, run_program


def program(*lines: str) -> str:
    return "\n".join(lines)


GOOD = program(
    "def solution():",
    '    """29 species, 7 pairs each."""',
    "    species = 29",
    "    result = species * 7",
    "    return result",
)

ALLOWED = [
    GOOD,
    "import math\ndef solution():\n    return math.sqrt(16) + math.pi * 0",
    "from fractions import Fraction\ndef solution():\n    return Fraction(1, 3) * 3",
    "from decimal import Decimal\ndef solution():\n    return Decimal('1.10') + Decimal('2.20')",
    program(
        "import datetime",
        "def solution():",
        "    return (datetime.date(2024, 3, 1) - datetime.date(2024, 2, 1)).days",
    ),
    program(
        "def helper(x):",
        "    return x * 2",
        "def solution():",
        "    total = 0",
        "    for i in range(5):",
        "        total += helper(i)",
        "    return total",
    ),
    "def solution():\n    try:\n        return 1 / 0\n    except ZeroDivisionError:\n        return -1",
    program(
        "def solution():",
        "    squares = [i * i for i in range(4)]",
        "    return sum(squares) if squares else max(1, 2)",
    ),
    program(
        "def solution():",
        "    f = lambda x: x + 1",
        "    n = 0",
        "    while n < 3:",
        "        n = f(n)",
        "    return round(n / 3, 2)",
    ),
    "def solution():\n    return f'{3 + 4}'",
]


@pytest.mark.parametrize("source", ALLOWED)
def test_plain_computation_passes_the_allow_list(source):
    assert check_program(source) is None


REFUSED = [
    ("import os\ndef solution():\n    return os.system('ls')", "imports os (line 1)"),
    ("import subprocess\ndef solution(): return 1", "imports subprocess"),
    ("from os import system\ndef solution(): return 1", "imports from os"),
    ("import os.path\ndef solution(): return 1", "imports os.path"),
    ("from math import *\ndef solution(): return pi", "imports a private or every name from math"),
    ("from . import secrets\ndef solution(): return 1", "imports from ."),
    ("def solution():\n    return __import__('os').system('ls')", "uses the name __import__ (line 2)"),
    ("def solution():\n    open('pwned.txt', 'w').write('x')\n    return 1", "uses the name open (line 2)"),
    ("def solution():\n    return eval('1 + 1')", "uses the name eval"),
    ("def solution():\n    exec('x = 1')\n    return 1", "uses the name exec"),
    ("def solution():\n    return compile('1', 'f', 'eval')", "uses the name compile"),
    ("def solution():\n    return globals()", "uses the name globals"),
    ("import math\ndef solution():\n    return getattr(math, 'pi')", "uses the name getattr"),
    ("def solution():\n    return vars()", "uses the name vars"),
    ("def solution():\n    return type(1)", "uses the name type"),
    (
        "def solution():\n    return ().__class__.__bases__[0].__subclasses__()",
        "uses the attribute __subclasses__",
    ),
    ("def solution():\n    g = (x for x in [1])\n    return g.gi_frame.f_back", "uses the attribute f_back"),
    ("def solution():\n    return solution.__globals__", "uses the attribute __globals__"),
    (
        "import math\ndef solution():\n    math.pi = 3\n    return math.pi",
        "changes the attribute pi (line 3)",
    ),
    ("class A:\n    pass\ndef solution(): return 1", "uses ClassDef"),
    ("def solution():\n    with x as y:\n        return 1", "uses With"),
    ("async def solution():\n    return 1", "uses AsyncFunctionDef"),
    ("def solution():\n    yield 1", "uses Yield"),
    ("def deco(f): return f\n@deco\ndef solution(): return 1", "decorates solution"),
    ("result = 5", "defines no solution() function"),
    ("def solution(:\n    return 1", "syntax error"),
]


@pytest.mark.parametrize(("source", "reason"), REFUSED)
def test_the_allow_list_refuses_escapes_with_a_reason(source, reason):
    found = check_program(source)
    assert found is not None and found.startswith(reason), found


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(cpu_seconds=1, wall_seconds=4, memory_mb=256) as box:
        yield box


@pytest.mark.parametrize(
    ("source", "value"),
    [
        (GOOD, "203"),
        ("def solution():\n    return 7 / 2", "3.5"),
        ("def solution():\n    return 0.1 + 0.2", "0.30000000000000004"),  # compared within rounding later
        ("from fractions import Fraction\ndef solution():\n    return Fraction(1, 3)", "1/3"),
        ("from decimal import Decimal\ndef solution():\n    return Decimal('1.10') * 2", "2.20"),
        ("def solution():\n    print('noise on stdout')\n    return ' C '", "C"),
        ("def solution():\n    return 10 ** 30", str(10**30)),
    ],
)
def test_programs_run_and_report_what_solution_returns(sandbox, source, value):
    result = sandbox.run(source)
    assert result.ok and result.value == value and result.error is None


@pytest.mark.parametrize(
    ("source", "error"),
    [
        ("def solution():\n    return None", "solution() returned None"),
        ("def solution():\n    return True", "solution() returned a bool"),
        ("def solution():\n    return [1, 2]", "solution() returned a list"),
        ("def solution():\n    return float('inf')", "solution() returned inf"),
        ("def solution():\n    return 1 / 0", "raised ZeroDivisionError: division by zero"),
        ("import fractions\ndef solution():\n    return fractions.sys.modules", "raised AttributeError"),
        ("import datetime\ndef solution():\n    return datetime.sys", "raised AttributeError"),
    ],
)
def test_programs_that_return_no_number_fail_with_the_reason(sandbox, source, error):
    result = sandbox.run(source)
    assert not result.ok and result.value is None and result.error.startswith(error), result


HOSTILE = [
    ("def solution():\n    while True:\n        pass", "CPU time limit (1 s) reached"),
    ("def solution():\n    x = [0] * (10 ** 10)\n    return 1", "out of memory"),
    ("def solution():\n    s = 'a' * (2 ** 31)\n    return len(s)", "out of memory"),
    (
        "def solution():\n    chunks = []\n    while True:\n        chunks.append(' ' * 10 ** 6)",
        "out of memory",
    ),
    ("def solution():\n    return 10 ** (10 ** 9)", "CPU time limit (1 s) reached"),
    ("def f(n):\n    return f(n + 1)\ndef solution():\n    return f(0)", "raised RecursionError"),
]


@pytest.mark.parametrize(("source", "error"), HOSTILE)
def test_hostile_programs_fail_and_the_next_program_is_unaffected(sandbox, source, error):
    result = sandbox.run(source)
    assert not result.ok and result.error.startswith(error), result
    assert sandbox.run(GOOD).value == "203"


def test_behind_the_allow_list_builtins_and_imports_are_walls_too(tmp_path, monkeypatch):
    """With the syntax check switched off, the worker still hands out no file, process or module."""
    monkeypatch.setattr(sandbox_module, "check_program", lambda source: None)
    monkeypatch.chdir(tmp_path)
    attempts = {
        "def solution():\n    open('pwned.txt', 'w').write('x')\n    return 1": "raised NameError",
        "import os\ndef solution():\n    os.system('touch pwned.txt')\n    return 1": "raised ImportError",
        "def solution():\n    return __import__('os').system('touch pwned.txt')": "raised ImportError",
        "def solution():\n    return eval('1')": "raised NameError",
        "import subprocess\ndef solution():\n    return 1": "raised ImportError",
    }
    with Sandbox(cpu_seconds=1, wall_seconds=4) as box:
        for source, error in attempts.items():
            result = box.run(source)
            assert not result.ok and result.error.startswith(error), (source, result)
        sandbox_dir = Path(box._directory.name)
        assert sandbox_dir.is_dir() and list(sandbox_dir.iterdir()) == []  # its working directory: empty
    assert not sandbox_dir.exists()  # removed with the sandbox
    assert not (tmp_path / "pwned.txt").exists() and not list(tmp_path.iterdir())


def test_the_wall_clock_limit_kills_a_program_the_cpu_limit_would_let_run():
    result = run_program("def solution():\n    while True:\n        pass", cpu_seconds=60, wall_seconds=1)
    assert not result.ok and result.error == "timed out after 1 s"


def test_a_dead_worker_is_replaced(sandbox):
    assert sandbox.run(GOOD).ok
    sandbox._process.kill()
    sandbox._process.wait()
    assert sandbox.run(GOOD).value == "203"  # a fresh worker for the next program


def test_the_worker_runs_with_an_empty_environment_and_isolated_python(sandbox):
    assert sandbox.run(GOOD).ok
    args = sandbox._process.args
    assert args[1:3] == ["-I", "-S"] and os.path.basename(args[3]) == "sandbox_worker.py"
    environ = Path(f"/proc/{sandbox._process.pid}/environ")
    if environ.exists():  # Linux
        assert environ.read_bytes() == b""


@pytest.mark.parametrize(
    ("text", "source"),
    [
        ("def solution():\n    return 1\n", "def solution():\n    return 1"),
        (
            "Here it is:\n```python\ndef solution():\n    return 2\n```\nDone.",
            "def solution():\n    return 2",
        ),
    ],
)
def test_program_source_takes_the_fenced_block(text, source):
    assert program_source(text) == source

"""Running untrusted program rationales (program-of-thought): `Sandbox`, `run_program`.

A teacher with `verify: program` writes Python such as

    def solution():
        num_species = 29
        result = num_species * 7
        return result

and the rationale is verified by running it and comparing what `solution()` returns with the gold
answer. The code is untrusted, so three walls stand between it and this machine:

1. `check_program` reads its syntax tree before anything runs: only plain computation (functions,
   loops, arithmetic, lists, dicts, comprehensions, try/except) is allowed; imports only of `math`,
   `fractions`, `decimal` and `datetime`; no name or attribute that starts with an underscore (so no
   `__import__`, `__class__`, `__subclasses__`) nor one that leads to frames or code (`gi_frame`,
   `f_globals`, `co_code`), no attribute assignment, and no `open`, `exec`, `eval`, `compile`,
   `globals`, `getattr`, `vars`, `type`, `input`, `breakpoint` and the like. This check is the wall
   against escapes (CPython offers no sandbox below it); the other two limit the damage of mistakes.
   A program that fails the check fails verification with the reason ("imports os (line 1)") and
   never runs.
2. It runs in a separate process (`sandbox_worker.py`, `python -I -S`: no site packages, no
   environment variables, an empty environment, the current directory an empty temporary directory
   that is removed afterwards) with only a small set of builtins; `import` hands out only the four
   modules, already loaded, as copies holding their public names only (no `fractions.sys`).
3. Each program runs in a fresh fork of that process with a CPU-time limit, an address-space limit,
   no file allowed to grow (RLIMIT_FSIZE 0), few file descriptors, and a wall-clock timeout after
   which it is killed. A program that loops, exhausts memory or crashes fails with the reason and
   takes nothing else with it: the next program gets a fresh fork, and a worker that dies is
   restarted.
There is no network namespace on an ordinary Linux account; the network is out of reach because
no module that could open a socket can be imported. Programs run one after another; a fork costs
about a millisecond, so thousands of programs take seconds (benchmarks/README.md has the figure).

POSIX only (fork, setrlimit): on Windows `Sandbox` raises `UserError`.
"""

from __future__ import annotations

import ast
import json
import os
import re
import selectors
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from scalingdown.errors import UserError

ALLOWED_MODULES = frozenset({"math", "fractions", "decimal", "datetime"})
FORBIDDEN_NAMES = frozenset(
    "open exec eval compile globals locals vars getattr setattr delattr hasattr input breakpoint help "
    "exit quit memoryview type object super classmethod staticmethod property dir id".split()
)
# Syntax a program of computation needs; anything else (class, with, async, yield, match) is refused.
_ALLOWED_NODES = tuple(
    getattr(ast, name)
    for name in (
        "Module FunctionDef arguments arg Return Assign AugAssign AnnAssign For While If Expr Pass Break "
        "Continue Try ExceptHandler Raise Assert Delete Global Nonlocal Import ImportFrom alias "
        "BinOp UnaryOp BoolOp Compare Call keyword Name Constant Attribute Subscript Slice List Tuple "
        "Dict Set ListComp SetComp DictComp GeneratorExp comprehension IfExp JoinedStr FormattedValue "
        "Starred NamedExpr Lambda Load Store Del "
        "Add Sub Mult Div FloorDiv Mod Pow LShift RShift BitOr BitXor BitAnd MatMult "
        "UAdd USub Not Invert And Or Eq NotEq Lt LtE Gt GtE Is IsNot In NotIn"
    ).split()
    if hasattr(ast, name)
)
# Public attributes that lead to frames and code (a running generator's `gi_frame.f_back.f_globals`
# is the worker's own namespace): as closed as the underscore ones.
_FRAME_ATTRIBUTE = re.compile(r"(?:gi|cr|ag|f|co|tb)_")
_FENCE = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)```", re.DOTALL)
WORKER = Path(__file__).with_name("sandbox_worker.py")


@dataclass(frozen=True)
class ProgramResult:
    """What running one program gave: `value` (what `solution()` returned, as text) or `error`."""

    ok: bool
    value: str | None = None
    error: str | None = None
    seconds: float = 0.0


def program_source(text: str) -> str:
    """The program in a completion: the first fenced code block if there is one, else the text."""
    fenced = _FENCE.search(text)
    return (fenced.group(1) if fenced else text).strip("\n").rstrip()


def check_program(source: str) -> str | None:
    """Why `source` may not run (one line, naming the line), or None when it passes the allow-list."""
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        return f"syntax error: {exc.msg} (line {exc.lineno})"
    for node in ast.walk(tree):
        line = f"(line {getattr(node, 'lineno', '?')})"
        if not isinstance(node, _ALLOWED_NODES):
            return f"uses {type(node).__name__}, which programs may not {line}"
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] not in ALLOWED_MODULES or "." in alias.name:
                    return f"imports {alias.name} {line}"
        elif isinstance(node, ast.ImportFrom):
            if node.level or node.module not in ALLOWED_MODULES:
                return f"imports from {'.' * node.level}{node.module or ''} {line}"
            if any(alias.name.startswith("_") or alias.name == "*" for alias in node.names):
                return f"imports a private or every name from {node.module} {line}"
        elif isinstance(node, ast.Name) and (node.id.startswith("_") or node.id in FORBIDDEN_NAMES):
            return f"uses the name {node.id} {line}"
        elif isinstance(node, ast.Attribute) and (
            node.attr.startswith("_") or _FRAME_ATTRIBUTE.match(node.attr)
        ):
            return f"uses the attribute {node.attr} {line}"
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, (ast.Store, ast.Del)):
            return f"changes the attribute {node.attr} {line}"
        elif isinstance(node, ast.FunctionDef) and node.decorator_list:
            return f"decorates {node.name} {line}"
    if not any(isinstance(node, ast.FunctionDef) and node.name == "solution" for node in tree.body):
        return "defines no solution() function"
    return None


class Sandbox:
    """One worker process that runs programs one at a time; use as a context manager.

    `cpu_seconds` and `memory_mb` limit each program's process; `wall_seconds` is how long one may
    take before it is killed (a busy machine makes wall time longer than CPU time).
    """

    def __init__(self, *, cpu_seconds: int = 2, wall_seconds: float = 5.0, memory_mb: int = 512):
        if os.name != "posix":
            raise UserError(
                "verify: program needs a POSIX system (fork and resource limits); use verify: answer"
            )
        self.limits = {
            "cpu_seconds": int(cpu_seconds),
            "wall_seconds": float(wall_seconds),
            "memory_bytes": int(memory_mb) * 2**20,
        }
        self._process: subprocess.Popen | None = None
        self._directory: tempfile.TemporaryDirectory | None = None
        self._buffer = b""
        # Without close() the worker still ends with this process: it stops at the end of its stdin.

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _start(self) -> subprocess.Popen:
        self._directory = tempfile.TemporaryDirectory(prefix="scalingdown-sandbox-")
        self._buffer = b""
        self._process = subprocess.Popen(
            [sys.executable, "-I", "-S", str(WORKER), json.dumps(self.limits)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=self._directory.name,
            env={},
            close_fds=True,
        )
        return self._process

    def close(self) -> None:
        """Stop the worker and remove its directory."""
        if self._process is not None:
            if self._process.poll() is None:
                self._process.kill()
            self._process.wait()
            for stream in (self._process.stdin, self._process.stdout):
                stream.close()
            self._process = None
        if self._directory is not None:
            self._directory.cleanup()
            self._directory = None

    def _read_line(self, process: subprocess.Popen, timeout: float) -> bytes | None:
        """One line from the worker, or None if it dies or says nothing within `timeout`."""
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not selector.select(remaining):
                    return None
                chunk = os.read(process.stdout.fileno(), 65536)
                if not chunk:
                    return None
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line

    def run(self, source: str) -> ProgramResult:
        """Check `source`, run it, and say what `solution()` returned or why it failed."""
        started = time.perf_counter()
        refused = check_program(source)
        if refused is not None:
            return ProgramResult(False, error=f"not allowed: {refused}")
        process = (
            self._process if self._process is not None and self._process.poll() is None else self._start()
        )
        try:
            process.stdin.write(json.dumps({"source": source}).encode() + b"\n")
            process.stdin.flush()
            line = self._read_line(process, self.limits["wall_seconds"] + 10)
        except (BrokenPipeError, OSError):
            line = None
        seconds = time.perf_counter() - started
        if line is None:  # the worker itself died or hung: start a fresh one for the next program
            self.close()
            return ProgramResult(False, error="the sandbox worker stopped", seconds=seconds)
        reply = json.loads(line)
        return ProgramResult(reply["ok"], reply.get("value"), reply.get("error"), seconds)


def run_program(source: str, **limits) -> ProgramResult:
    """Run one program in a sandbox of its own (start-up included: prefer `Sandbox` for many)."""
    with Sandbox(**limits) as sandbox:
        return sandbox.run(source)

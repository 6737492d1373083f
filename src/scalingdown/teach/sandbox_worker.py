"""The child process of `scalingdown.teach.sandbox`: runs untrusted programs, one fork each.

Started as `python -I -S sandbox_worker.py LIMITS_JSON` with an empty environment in an empty
temporary directory; it imports only the standard library and never `scalingdown` (the package is
not importable there on purpose). It first limits itself (no file may grow: RLIMIT_FSIZE 0; few
file descriptors; no core dumps), imports the modules programs may import, then reads one JSON
request a line from stdin: {"source": ...}. For each it forks a child that lowers its CPU time and
address space limits, sends stdout and stderr to /dev/null, executes the program with a small set of
builtins (an `__import__` that hands out only the allowed modules, which are already loaded, so no
file is opened; and copies of them without their own imports, so `fractions.sys` is no way out),
calls `solution()` and writes the described result to a pipe. The worker waits at
most the wall limit, kills the child if it is still running, and writes one JSON line per request
to stdout: {"ok": true, "value": "203"} or {"ok": false, "error": "timed out after 3 s"}.

A program that loops, allocates without end, recurses or crashes harms only its own child; the next
request gets a fresh one. The parent checked every program's syntax tree before sending it
(`sandbox.check_program`); the restricted builtins are the second wall, the limits the third.
"""

from __future__ import annotations

import datetime
import decimal
import fractions
import json
import math
import os
import resource
import select
import signal
import sys
import time
import types


def public_namespace(module: types.ModuleType) -> types.ModuleType:
    """A copy of `module` with its public names only and no module in it: `fractions.sys` or
    `datetime.sys` would hand a program the interpreter."""
    copy = types.ModuleType(module.__name__)
    for name, value in vars(module).items():
        if not name.startswith("_") and not isinstance(value, types.ModuleType):
            setattr(copy, name, value)
    return copy


MODULES = {module.__name__: public_namespace(module) for module in (math, fractions, decimal, datetime)}
SAFE_BUILTINS = (
    "abs all any bool chr dict divmod enumerate filter float format frozenset int isinstance iter len list "
    "map max min next ord pow range repr reversed round set slice sorted str sum tuple zip "
    "ArithmeticError AssertionError Exception IndexError KeyError OverflowError TypeError ValueError "
    "ZeroDivisionError StopIteration"
).split()
MAX_VALUE_CHARS = 200


def limit(kind: int, value: int) -> None:
    soft, hard = resource.getrlimit(kind)
    value = value if hard == resource.RLIM_INFINITY else min(value, hard)
    resource.setrlimit(kind, (value, value))


def restricted_import(name, globals=None, locals=None, fromlist=(), level=0):  # noqa: A002 - the signature of __import__
    if level or name not in MODULES:
        raise ImportError(f"import of {name!r} is not allowed")
    return MODULES[name]


def builtins_for_programs() -> dict:
    import builtins

    allowed = {name: getattr(builtins, name) for name in SAFE_BUILTINS}
    allowed["__import__"] = restricted_import
    allowed["print"] = lambda *args, **kwargs: None
    return allowed


def describe(value) -> dict:
    """A return value as text a parent can compare exactly, or why it cannot be one."""
    if value is None:
        return {"ok": False, "error": "solution() returned None"}
    if isinstance(value, bool):
        return {"ok": False, "error": "solution() returned a bool"}
    if isinstance(value, int):
        try:
            text = str(value)
        except ValueError:
            return {"ok": False, "error": "solution() returned an integer too large to read"}
    elif isinstance(value, float):
        if not math.isfinite(value):
            return {"ok": False, "error": f"solution() returned {value!r}"}
        text = repr(value)
    elif isinstance(value, fractions.Fraction):
        text = f"{value.numerator}/{value.denominator}"
    elif isinstance(value, decimal.Decimal):
        if not value.is_finite():
            return {"ok": False, "error": f"solution() returned {value}"}
        text = str(value)
    elif isinstance(value, str):
        text = value.strip()
    else:
        return {"ok": False, "error": f"solution() returned a {type(value).__name__}"}
    if len(text) > MAX_VALUE_CHARS:
        return {"ok": False, "error": f"solution() returned a value of {len(text)} characters"}
    return {"ok": True, "value": text}


def run_in_child(source: str, builtins: dict, write_fd: int, devnull: int, limits: dict) -> None:
    """The forked child: lower the limits, run the program, write the result, exit."""
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    limit(resource.RLIMIT_CPU, limits["cpu_seconds"])
    limit(resource.RLIMIT_AS, limits["memory_bytes"])
    sys.setrecursionlimit(2000)
    try:
        namespace = {"__builtins__": builtins, "__name__": "program"}
        exec(compile(source, "<program>", "exec"), namespace)  # noqa: S102 - the sandbox's purpose
        solution = namespace.get("solution")
        result = describe(solution()) if callable(solution) else {"ok": False, "error": "no solution()"}
    except MemoryError:
        result = {"ok": False, "error": "out of memory"}
    except RecursionError:
        result = {"ok": False, "error": "raised RecursionError (recursion too deep)"}
    except BaseException as exc:  # noqa: BLE001 - whatever the program raises is its failure
        result = {"ok": False, "error": f"raised {type(exc).__name__}: {str(exc)[:120]}"}
    try:
        os.write(write_fd, json.dumps(result).encode())
    finally:
        os._exit(0)


def run_one(source: str, builtins: dict, devnull: int, limits: dict) -> dict:
    read_fd, write_fd = os.pipe()
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        run_in_child(source, builtins, write_fd, devnull, limits)
    os.close(write_fd)
    chunks, deadline, killed = [], started + limits["wall_seconds"], False
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            os.kill(pid, signal.SIGKILL)
            killed = True
            break
        ready, _, _ = select.select([read_fd], [], [], remaining)
        if ready:
            chunk = os.read(read_fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    os.close(read_fd)
    _, status = os.waitpid(pid, 0)
    if killed:
        return {"ok": False, "error": f"timed out after {limits['wall_seconds']:g} s"}
    if chunks:
        try:
            return json.loads(b"".join(chunks))
        except ValueError:
            return {"ok": False, "error": "wrote an unreadable result"}
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig in (signal.SIGXCPU, signal.SIGKILL):
            return {"ok": False, "error": f"CPU time limit ({limits['cpu_seconds']} s) reached"}
        return {"ok": False, "error": f"killed by signal {signal.Signals(sig).name}"}
    return {"ok": False, "error": "exited without a result"}


def main() -> None:
    limits = json.loads(sys.argv[1])
    devnull = os.open(os.devnull, os.O_WRONLY)
    limit(resource.RLIMIT_FSIZE, 0)  # no file may be written, wherever it is
    limit(resource.RLIMIT_CORE, 0)
    limit(resource.RLIMIT_NOFILE, 16)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write that would grow a file fails instead
    builtins = builtins_for_programs()
    for line in sys.stdin:
        request = json.loads(line)
        result = run_one(request["source"], builtins, devnull, limits)
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()

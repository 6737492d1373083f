"""The `scalingdown` command. Heavy imports live inside the commands so `--help` answers at once.

Every command takes an optional study CONFIG (YAML); flags override its keys. A user mistake prints
one line (`error: file:line: key: what is wrong`) and exits with status 2; work that failed in part
names each failed part and exits with status 1 (the exit codes are listed in `scalingdown.errors`).
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

import typer

from scalingdown.config import DataConfig, EvalConfig, ModelConfig, StudyConfig, TeachConfig, field_help
from scalingdown.errors import EXIT_INTERRUPTED, EXIT_PARTIAL, EXIT_USER, PartialFailure, UserError
from scalingdown.serve.limits import ServeLimits

app = typer.Typer(
    name="scalingdown",
    help="How small can a student model be and still beat a larger one? Multi-teacher distillation,"
    " measured.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

CONFIG_ARG = typer.Argument(None, help="Study config (YAML). Without it the built-in defaults are used.")
RUN_DIR = typer.Option(None, "--run-dir", help=field_help(StudyConfig, "run_dir"))


# What the environment refuses (not a bug): a directory without write permission, a read-only file
# system, a full disk or quota, a file-size limit (`ulimit -f`; Python ignores SIGXFSZ, so it is EFBIG).
ENVIRONMENT_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EFBIG, errno.EDQUOT}


def _fail(message: str, code: int = EXIT_USER) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def environment_error(exc: BaseException) -> str | None:
    """One line for an OSError the environment caused (possibly wrapped by a library), else None."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in ENVIRONMENT_ERRNOS:
            where = f"{exc.filename}: " if exc.filename else ""
            return f"{where}cannot write ({exc.strerror or os.strerror(exc.errno)}); finished work is kept"
        exc = exc.__cause__ or exc.__context__
    return None


def user_errors(command: Callable) -> Callable:
    """`UserError` -> one line on stderr, exit 2; `PartialFailure` -> a line per failed part, exit 1;
    a refused write (permissions, full disk) -> one line, exit 2; Ctrl-C -> a short note, exit 130."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except UserError as exc:
            _fail(str(exc))
        except PartialFailure as exc:
            for line in exc.failures:
                typer.echo(f"failed: {line}", err=True)
            count = len(exc.failures)
            _fail(
                f"{count} part{'s' if count != 1 else ''} of the work failed (listed above); everything "
                "else is done and saved, and a rerun retries only what failed",
                code=EXIT_PARTIAL,
            )
        except KeyboardInterrupt:
            _fail("interrupted; finished work is kept and a rerun resumes", code=EXIT_INTERRUPTED)
        except Exception as exc:
            line = environment_error(exc)
            if line is None:
                raise
            _fail(line)

    return wrapper


def _set(tree: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        tree = tree.setdefault(key, {})
    tree[leaf] = value


def load_study(config: Path | None, overrides: dict[str, Any]) -> StudyConfig:
    """The config file (or defaults) with command-line flags laid over it, validated as one."""
    from scalingdown.config_file import load_config, parse_config

    study = load_config(config) if config is not None else StudyConfig()
    given = {k: v for k, v in overrides.items() if v is not None}
    if not given:
        return study
    tree = study.model_dump(mode="json", exclude_unset=False)
    for key, value in given.items():
        _set(tree, key, value)
    return parse_config(tree, source=f"{config or 'defaults'} + command-line flags")


@app.command()
@user_errors
def validate(config: Path = typer.Argument(..., help="Study config (YAML) to check.")) -> None:
    """Check a study config and print its resolved form."""
    import yaml

    from scalingdown.config_file import load_config
    from scalingdown.errors import redact_tree

    study = load_config(config)
    typer.echo(yaml.safe_dump(redact_tree(study.model_dump(mode="json")), sort_keys=False).rstrip())
    typer.echo(f"ok: {config} is a valid study config", err=True)


@app.command()
@user_errors
def data(
    config: Path | None = CONFIG_ARG,
    run_dir: str | None = RUN_DIR,
    dataset: str | None = typer.Option(None, help=field_help(DataConfig, "dataset")),
    path: str | None = typer.Option(None, help=field_help(DataConfig, "path")),
    train_limit: int | None = typer.Option(None, help=field_help(DataConfig, "train_limit")),
    test_limit: int | None = typer.Option(None, help=field_help(DataConfig, "test_limit")),
) -> None:
    """Write data/{train,test}.jsonl into the run directory, with counts and a train/test overlap check."""
    from scalingdown.study import ensure_data

    study = load_study(
        config,
        {
            "run_dir": run_dir,
            "data.dataset": dataset,
            "data.path": path,
            "data.train_limit": train_limit,
            "data.test_limit": test_limit,
        },
    )
    report = ensure_data(study, force=True)  # the command always reloads, and records itself
    _print_data_report(report, Path(study.run_dir))


def _print_data_report(report: dict, run_dir: Path) -> None:
    overlap = report["overlap"]
    typer.echo(
        f"{report['dataset']}: {report['counts']['train']} train, {report['counts']['test']} test problems "
        f"-> {run_dir / 'data'}"
    )
    typer.echo(
        f"overlap: {overlap['flagged']} test questions share >= {overlap['threshold']:.0%} of their "
        f"{overlap['ngram']}-grams with a train question ({overlap['exact']} exact duplicates)"
    )


@app.command()
@user_errors
def teach(
    config: Path = typer.Argument(..., help="Study config (YAML) with a 'teachers' list."),
    run_dir: str | None = RUN_DIR,
    limit: int | None = typer.Option(None, help=field_help(TeachConfig, "limit")),
    policy: str | None = typer.Option(None, help=field_help(TeachConfig, "policy")),
    routing: bool | None = typer.Option(
        None, "--routing/--no-routing", help=field_help(TeachConfig, "routing")
    ),
    teacher: list[str] | None = typer.Option(
        None, help="Run only this teacher (repeat for several); e.g. one job per teacher server."
    ),
) -> None:
    """Every teacher writes rationales for the train problems -> teachers/<name>/ (verified, cached)."""
    from scalingdown.study import ensure_teach, teach_failures

    study = load_study(
        config, {"run_dir": run_dir, "teach.limit": limit, "teach.policy": policy, "teach.routing": routing}
    )
    failures = teach_failures(ensure_teach(study, only=teacher or None))
    if failures:
        raise PartialFailure(failures)


@app.command()
@user_errors
def train(
    config: Path = typer.Argument(..., help="Study config (YAML) with a 'students' list."),
    run_dir: str | None = RUN_DIR,
    student: list[str] | None = typer.Option(None, help="Train only this student (repeat for several)."),
    force: bool = typer.Option(False, help="Train again even when the saved student matches its config."),
) -> None:
    """Distil every student from the teachers' rationales -> students/<name>/ (resumes from checkpoints).

    Runs the same under `accelerate launch` or `torchrun` for several GPUs or processes.
    """
    from scalingdown.study import ensure_students, named_failures

    study = load_study(config, {"run_dir": run_dir})
    failures = named_failures("student", ensure_students(study, only=student or None, force=force))
    if failures:
        raise PartialFailure(failures)


@app.command()
@user_errors
def serve(
    model_path: str = typer.Argument(..., help="Local model directory (or Hugging Face id) to serve."),
    host: str = typer.Option(
        "127.0.0.1",
        help="Address to listen on. Default 127.0.0.1 (this machine only); any other address is reachable "
        "from the network and prints a warning (then also set --api-key-env).",
    ),
    port: int = typer.Option(8000, help="Port to listen on (0: any free port; the URL is printed)."),
    model_name: str | None = typer.Option(
        None,
        help="Model name clients ask for. Default: the model directory's name; the path is accepted too.",
    ),
    api_key_env: str | None = typer.Option(
        None, help="Name of an environment variable holding the key clients must send (none: no key)."
    ),
    device: str = typer.Option("auto", help=field_help(EvalConfig, "device")),
    dtype: str = typer.Option("auto", help=field_help(EvalConfig, "dtype")),
    max_batch_size: int = typer.Option(
        32,
        help="Most prompts generated together; only requests with the same sampling settings share a batch.",
    ),
    batch_wait_ms: float = typer.Option(
        5.0,
        help="How long a forming batch waits for another request to join before it starts (restarting at "
        "each arrival, at most 10x this in all).",
    ),
    max_sequences: int = typer.Option(
        ServeLimits.model_fields["max_sequences"].default, help=field_help(ServeLimits, "max_sequences")
    ),
    max_tokens: int = typer.Option(
        ServeLimits.model_fields["max_tokens"].default, help=field_help(ServeLimits, "max_tokens")
    ),
    max_body_mb: float = typer.Option(
        ServeLimits.model_fields["max_body_mb"].default, help=field_help(ServeLimits, "max_body_mb")
    ),
) -> None:
    """Serve a local model over an OpenAI-compatible API (chat and completions) with request batching.

    The OpenAPI document is at /openapi.json. A request's size is checked before its prompts are
    tokenised, and the work of a client that disconnects is dropped.
    """
    import os

    from scalingdown.serve.server import serve as serve_model

    api_key = None
    if api_key_env is not None:
        api_key = os.environ.get(api_key_env)
        if not api_key:
            raise UserError(f"--api-key-env: the environment variable {api_key_env} is not set")
    serve_model(
        model_path,
        host=host,
        port=port,
        device=device,
        dtype=dtype,
        max_batch_size=max_batch_size,
        batch_wait_ms=batch_wait_ms,
        model_name=model_name,
        api_key=api_key,
        max_sequences=max_sequences,
        max_tokens=max_tokens,
        max_body_mb=max_body_mb,
    )


@app.command("eval")
@user_errors
def eval_command(
    config: Path | None = CONFIG_ARG,
    run_dir: str | None = RUN_DIR,
    model: str | None = typer.Option(
        None, help="Evaluate this model (Hugging Face id or local path) instead of the config's models."
    ),
    name: str | None = typer.Option(None, help=field_help(ModelConfig, "name") + " Default: from --model."),
    predictions: Path | None = typer.Option(
        None, help="Score outputs produced elsewhere: a JSONL of {id, text} per test problem."
    ),
    prompt: str | None = typer.Option(None, help=field_help(EvalConfig, "prompt")),
    mode: str | None = typer.Option(None, "--mode", help=field_help(EvalConfig, "student_mode")),
    num_fewshot: int | None = typer.Option(None, help=field_help(EvalConfig, "num_fewshot")),
    limit: int | None = typer.Option(None, help=field_help(EvalConfig, "limit")),
    batch_size: int | None = typer.Option(None, help=field_help(EvalConfig, "batch_size")),
    max_new_tokens: int | None = typer.Option(None, help=field_help(EvalConfig, "max_new_tokens")),
    temperature: float | None = typer.Option(None, help=field_help(EvalConfig, "temperature")),
    self_consistency: int | None = typer.Option(None, help=field_help(EvalConfig, "self_consistency")),
    device: str | None = typer.Option(None, help=field_help(EvalConfig, "device")),
    dtype: str | None = typer.Option(None, help=field_help(EvalConfig, "dtype")),
) -> None:
    """Evaluate models on the run's test problems -> eval/<name>/{predictions.jsonl,metrics.json}."""
    from scalingdown.study import evaluate_models, named_failures, score_external

    study = load_study(
        config,
        {
            "run_dir": run_dir,
            "eval.prompt": prompt,
            "eval.student_mode": mode,
            "eval.num_fewshot": num_fewshot,
            "eval.limit": limit,
            "eval.batch_size": batch_size,
            "eval.max_new_tokens": max_new_tokens,
            "eval.temperature": temperature,
            "eval.self_consistency": self_consistency,
            "eval.device": device,
            "eval.dtype": dtype,
        },
    )
    if predictions is not None:
        score_external(study, predictions, name=plain_name(name or predictions.stem, "--name"))
        return
    if model is not None:
        spec = ModelConfig(name=plain_name(name or _name_from(model), "--name"), path=model)
        study = study.model_copy(update={"models": [spec]})
    if not study.models:
        raise UserError("nothing to evaluate: give --model, --predictions, or a config with 'models'")
    failures = named_failures("model", evaluate_models(study))
    if failures:
        raise PartialFailure(failures)


def plain_name(value: str, option: str) -> str:
    """`value` when it is a plain file name (it names a folder in the run directory), else one line."""
    from scalingdown.config import check_name

    try:
        return check_name(value)
    except ValueError as exc:
        raise UserError(f"{option}: {exc}") from None


def _name_from(model: str) -> str:
    return Path(model.rstrip("/")).name or "model"


@app.command()
@user_errors
def report(
    config: Path | None = CONFIG_ARG,
    run_dir: str | None = RUN_DIR,
    docs: Path | None = typer.Option(
        None, help="Also write the findings as a Markdown page here (e.g. docs/findings_and_results.md)."
    ),
) -> None:
    """Write report/: the smallest student that beats each reference, with tables and plots."""
    from scalingdown.study import default_config_path, write_findings_doc, write_report

    study = load_study(config or default_config_path(), {"run_dir": run_dir})
    index = write_report(study)
    if docs is not None:
        write_findings_doc(study, index.parent, docs)


@app.command()
@user_errors
def run(
    config: Path | None = CONFIG_ARG,
    run_dir: str | None = RUN_DIR,
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Print the plan (models, sizes, teacher requests, estimated cost) and stop."
    ),
) -> None:
    """Run every stage of a study in order, skipping what is done. Without CONFIG: the offline demo."""
    from scalingdown.study import console, default_config_path, run_study

    study = load_study(config or default_config_path(), {"run_dir": run_dir})
    if dry_run:
        from scalingdown.plan import print_plan

        print_plan(study, console)
        return
    run_study(study)


def main() -> None:
    """Console entry point."""
    try:
        app()
    except BrokenPipeError:  # `scalingdown ... | head`
        sys.stderr.close()


if __name__ == "__main__":
    main()

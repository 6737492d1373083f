"""Reading a study config file: YAML in, a validated `StudyConfig` out, every mistake one line.

`load_config(path)` refuses what a careful reader would: a file that is not UTF-8 text, invalid YAML,
a key given twice in one mapping (YAML would silently keep the last), values of the wrong type
(`seed: true`, `temperature: "0.5"`: the config models are strict) and unknown keys at any depth,
including the free-form blocks that are only used later: `lora:` and `hyperparameters:` (study-wide
and per student, checked merged over the shipped defaults) and each teacher's backend `options:`
(checked against that backend's own options model). So `scalingdown validate` and `run --dry-run`
catch a typo before the paid teach stage, with the message every other config mistake gets:

    study.yaml:12: students[1].hyperparameters.batch_sise: Extra inputs are not permitted
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from scalingdown.artifacts import read_text
from scalingdown.config import (
    Hyperparameters,
    LoraSettings,
    StudyConfig,
    key_path,
    shipped_training_defaults,
)
from scalingdown.errors import UserError


def line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """1-based line of the deepest YAML node that `loc` reaches."""
    line = node.start_mark.line + 1 if node is not None else None
    for item in loc:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if k.value == item), None)
            if match is None:
                key = next((k for k, _ in node.value if k.value == item), None)
                return key.start_mark.line + 1 if key is not None else line
            node = match
        elif isinstance(node, yaml.SequenceNode) and isinstance(item, int) and item < len(node.value):
            node = node.value[item]
        else:
            break
        line = node.start_mark.line + 1
    return line


def _duplicate_key(node: yaml.Node | None, loc: tuple[Any, ...] = ()) -> tuple[tuple, int, int] | None:
    """The first key given twice in one mapping: (key path, line of the repeat, line of the first)."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else None
            if name is not None and name != "<<":
                if name in seen:
                    return (*loc, name), key.start_mark.line + 1, seen[name]
                seen[name] = key.start_mark.line + 1
            found = _duplicate_key(value, (*loc, name))
            if found:
                return found
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            found = _duplicate_key(item, (*loc, index))
            if found:
                return found
    return None


def _first_error(exc: ValidationError, prefix: tuple[Any, ...] = ()) -> tuple[tuple[Any, ...], str, int]:
    errors = exc.errors()
    first = errors[0]
    loc = tuple(x for x in first["loc"] if not (isinstance(x, str) and x.startswith("function-")))
    message = first["msg"].removeprefix("Value error, ")
    named = _NAMED_KEY.match(message)
    if not loc and named:  # a whole-study check that names its key: point at that key's line
        loc = tuple(int(part) if part.isdigit() else part for part in re.findall(r"\w+", named[1]))
        message = named[2]
    return (*prefix, *loc), message, len(errors) - 1


# "eval.student_mode: ..." or "students[1].seeds: ...": a message that begins with the key it is about
_NAMED_KEY = re.compile(r"^([a-z_]+(?:\.[a-z_]+|\[\d+\])+): (.*)$", re.DOTALL)


def _check(model: type[BaseModel], data: dict, prefix: tuple[Any, ...]):
    try:
        model.model_validate(data)
    except ValidationError as exc:
        return _first_error(exc, prefix)
    return None


def nested_error(study: StudyConfig) -> tuple[tuple[Any, ...], str, int] | None:
    """The first mistake inside the free-form blocks (lora, hyperparameters, teacher options), as
    (key path, message, count of further errors), or None."""
    from scalingdown.teach.backend import get_backend

    lora, hyper = shipped_training_defaults()
    checks = [
        (LoraSettings, {**lora, **study.lora}, ("lora",), study.lora),
        (Hyperparameters, {**hyper, **study.hyperparameters}, ("hyperparameters",), study.hyperparameters),
    ]
    for i, student in enumerate(study.students):
        merged_lora = {**lora, **study.lora, **student.lora}
        merged_hyper = {**hyper, **study.hyperparameters, **student.hyperparameters}
        checks.append((LoraSettings, merged_lora, ("students", i, "lora"), student.lora))
        checks.append(
            (Hyperparameters, merged_hyper, ("students", i, "hyperparameters"), student.hyperparameters)
        )
    for model, data, prefix, _own in checks:
        found = _check(model, data, prefix)
        if found:
            return found
    for i, teacher in enumerate(study.teachers):
        options_model = get_backend(teacher.backend).Options
        if options_model is None:
            continue
        if "model" in teacher.options:
            return (("teachers", i, "options", "model"), "give the model as the teacher's 'model' key", 0)
        # A tiny teacher's model is built at teach time; any string stands in for its path here.
        model = teacher.model if teacher.model is not None else "tiny"
        found = _check(options_model, {"model": model, **teacher.options}, ("teachers", i, "options"))
        if found:
            loc, message, more = found
            if loc[3:] == ("model",):  # the teacher's own key, not one of its options
                loc = ("teachers", i, "model")
            return loc, message, more
    return None


def parse_config(data: Any, *, source: str | Path = "<config>", node: yaml.Node | None = None) -> StudyConfig:
    """Validate a mapping into a `StudyConfig`, nested blocks included; the first error becomes one
    `UserError` line naming the file, the line (when `node` is the YAML tree) and the key path."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError("the config must be a mapping of keys to values", path=source)
    try:
        study = StudyConfig.model_validate(data)
    except ValidationError as exc:
        loc, message, more = _first_error(exc)
        suffix = f" (and {more} more)" if more else ""
        raise UserError(f"{key_path(loc)}: {message}{suffix}", path=source, line=line_of(node, loc)) from None
    found = nested_error(study)
    if found:
        loc, message, more = found
        suffix = f" (and {more} more)" if more else ""
        raise UserError(f"{key_path(loc)}: {message}{suffix}", path=source, line=line_of(node, loc))
    return study


def load_config(path: str | Path) -> StudyConfig:
    """Read and validate a study YAML file."""
    path = Path(path)
    text = read_text(path, what="config")
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"invalid YAML: {problem}", path=path, line=mark.line + 1 if mark else None) from None
    duplicate = _duplicate_key(node)
    if duplicate:
        loc, line, first = duplicate
        raise UserError(f"{key_path(loc)}: key given twice (first on line {first})", path=path, line=line)
    return parse_config(data, source=path, node=node)

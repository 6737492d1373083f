"""Where a study's problems come from: a registry of data sets and `load_splits`.

Each data set registers one loader with `@register_dataset(name)`; a loader takes the `data:` block
of the config and the study seed and returns the train and test problems plus a description of the
source (a Hub id, a resolved local path, or the generator's settings). `load_splits` looks the name
up, calls the loader and applies `train_limit` / `test_limit` (the first N, so the result does not
depend on the seed).

Local copies (`data.path`) must be folders, since the data stage needs both splits:
- gsm8k: `train.jsonl` and `test.jsonl` (the public release's layout);
- aqua_rat: `test.json` is the test split; the train split is `train.json` if the folder has one,
  else `dev.json` (254 rows). The public release ships only dev and test, and the 97,467-row train
  split lives on the Hub only, so a local AQuA-RAT study trains on dev: small, but real.
- svamp: the ReFT layout, `train_nl.json` (3,076 MAWPS + ASDiv-A problems) and `test.json` (the
  1,000 SVAMP challenge problems); the Hub's `ChilleD/SVAMP` is another split of the challenge
  problems alone (700 / 300), see `scalingdown.data.svamp`.
Without `data.path` both come from the Hugging Face Hub (`openai/gsm8k` main, `deepmind/aqua_rat` raw,
`ChilleD/SVAMP` default).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from scalingdown.config import DataConfig
from scalingdown.data import aqua, gsm8k, svamp
from scalingdown.data.schema import Problem, problems_from_rows
from scalingdown.errors import UserError


class LoadedSplits(NamedTuple):
    train: list[Problem]
    test: list[Problem]
    source: str  # Hub id, resolved local path, or the generator's description


DatasetLoader = Callable[[DataConfig, int], LoadedSplits]
_LOADERS: dict[str, DatasetLoader] = {}


def register_dataset(name: str) -> Callable[[DatasetLoader], DatasetLoader]:
    """Decorator: make `loader` the way to get data set `name`."""

    def decorate(loader: DatasetLoader) -> DatasetLoader:
        if name in _LOADERS:
            raise ValueError(f"data set {name!r} is registered twice")
        _LOADERS[name] = loader
        return loader

    return decorate


def known_datasets() -> tuple[str, ...]:
    return tuple(sorted(_LOADERS))


def load_data(config: DataConfig, seed: int) -> LoadedSplits:
    """Train and test problems of the configured data set, limits applied, with their source."""
    loader = _LOADERS.get(config.dataset)
    if loader is None:
        raise UserError(
            f"data.dataset: unknown data set {config.dataset!r} (known: {', '.join(known_datasets())})"
        )
    loaded = loader(config, seed)
    train = loaded.train[: config.train_limit] if config.train_limit is not None else loaded.train
    test = loaded.test[: config.test_limit] if config.test_limit is not None else loaded.test
    return LoadedSplits(list(train), list(test), loaded.source)


def load_splits(config: DataConfig, seed: int) -> tuple[list[Problem], list[Problem]]:
    """(train, test) problems of the configured data set after `train_limit` / `test_limit`."""
    loaded = load_data(config, seed)
    return loaded.train, loaded.test


def local_folder(config: DataConfig) -> Path:
    """`data.path` resolved, checked to be an existing folder (both splits are needed)."""
    assert config.path is not None
    path = Path(config.path).expanduser().resolve()
    if not path.exists():
        raise UserError(f"data.path: {config.path} does not exist")
    if not path.is_dir():
        raise UserError(
            f"data.path: {config.path} is a single file, but a study needs a train and a test split: "
            "give the folder that holds both split files"
        )
    return path


def load_hub_rows(hub_id: str, config_name: str, split: str) -> list[dict[str, Any]]:
    """Rows of one Hub split as plain dicts. `datasets` is imported here so that every path that
    does not touch the Hub stays light; a failure (no network, no such split) becomes one line."""
    try:
        import datasets
    except ImportError as exc:
        raise UserError(f"loading {hub_id} from the Hub needs the 'datasets' package ({exc})") from None
    try:
        table = datasets.load_dataset(hub_id, config_name, split=split)
    except Exception as exc:  # network, auth and cache errors all mean "use a local copy"
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(
            f"cannot load {hub_id} ({config_name}, split {split}) from the Hugging Face Hub: {detail}; "
            "set data.path to a local copy"
        ) from None
    return [dict(row) for row in table]


def hub_problems(convert, hub_id: str, config_name: str, hub_split: str, split: str) -> list[Problem]:
    """One Hub split converted by a loader's `convert`; errors name `hf://ID/CONFIG/SPLIT:ROW`
    (Hub rows have no line, so the 1-based row number plays that part)."""
    rows = load_hub_rows(hub_id, config_name, hub_split)
    where = f"hf://{hub_id}/{config_name}/{hub_split}"
    return problems_from_rows(convert, ((i + 1, row) for i, row in enumerate(rows)), split=split, where=where)


@register_dataset(gsm8k.DATASET_NAME)
def _load_gsm8k(config: DataConfig, seed: int) -> LoadedSplits:
    if config.path is None:
        return LoadedSplits(gsm8k.load_gsm8k_hub("train"), gsm8k.load_gsm8k_hub("test"), gsm8k.HUB_ID)
    folder = local_folder(config)
    train = gsm8k.load_gsm8k_file(gsm8k.local_split_file(folder, "train"), "train")
    test = gsm8k.load_gsm8k_file(gsm8k.local_split_file(folder, "test"), "test")
    return LoadedSplits(train, test, str(folder))


@register_dataset(aqua.DATASET_NAME)
def _load_aqua(config: DataConfig, seed: int) -> LoadedSplits:
    if config.path is None:
        return LoadedSplits(aqua.load_aqua_hub("train"), aqua.load_aqua_hub("test"), aqua.HUB_ID)
    folder = local_folder(config)
    train_split = "train" if (folder / aqua.SPLITS["train"][1]).is_file() else "dev"
    train = aqua.load_aqua_file(aqua.local_split_file(folder, train_split), train_split)
    test = aqua.load_aqua_file(aqua.local_split_file(folder, "test"), "test")
    return LoadedSplits(train, test, str(folder))


@register_dataset(svamp.DATASET_NAME)
def _load_svamp(config: DataConfig, seed: int) -> LoadedSplits:
    if config.path is None:
        train, test, source = svamp.load_svamp_hub("train"), svamp.load_svamp_hub("test"), svamp.HUB_ID
    else:
        folder = local_folder(config)
        train = svamp.load_svamp_file(svamp.local_split_file(folder, "train"), "train")
        test = svamp.load_svamp_file(svamp.local_split_file(folder, "test"), "test")
        source = str(folder)
    # Ids carry no split (they come from item_ids numbered across both), so one in both splits
    # would be two problems under one name: the copy is broken, not the study.
    shared = {p.id for p in train} & {p.id for p in test}
    if shared:
        raise UserError(
            f"data.path: SVAMP problem {min(shared)!r} is in both the train and the test split of {source}"
        )
    return LoadedSplits(train, test, source)


@register_dataset("synthetic")
def _load_synthetic(config: DataConfig, seed: int) -> LoadedSplits:
    if config.path is not None:
        raise UserError("data.path: the synthetic data set is generated, it reads no files; remove data.path")
    from scalingdown.data.synthetic import generate_splits  # written alongside; keeps this import light

    train, test = generate_splits(config.synthetic, seed)
    settings = config.synthetic
    source = (
        f"synthetic (templates={settings.templates}, steps={settings.min_steps}-{settings.max_steps}, "
        f"max_value={settings.max_value}, seed={seed})"
    )
    return LoadedSplits(list(train), list(test), source)

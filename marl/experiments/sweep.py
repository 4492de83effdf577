"""Sweep files: experiment blocks expanded into runs, and the descriptors that name them.

A sweep file is a YAML list of blocks. In a block, ``hpset: NAME`` starts from a named
hyperparameter set (a list of names is a grid axis like any other list), ``config: FILE``
starts from a YAML config file (as ``marl train --config``; a relative path is read from
the sweep file's folder, so the sweep means the same from any directory; a list of files
is a grid axis), ``repeat: K`` asks for K seeds, and every other key is a config key
(dotted, or nested in sections). A list value spawns one run per element; several list
values spawn their Cartesian product. Keys whose own type is a list (``groups.hidden``)
take a list of lists as their grid; a plain list is one value for them.

Precedence inside one run: config defaults < the block's ``hpset`` < its ``config`` file
(an ``hpset:`` inside the file replaces the block's) < the block's keys.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from marl.config import Config, ConfigError, flat_keys, flatten, load
from marl.config_rules import yaml_error_text

SPECIAL_KEYS = ("hpset", "config", "repeat", "name")
# Keys that never tell runs apart: seeds group together, run.* says where and how to write.
_NOT_DESCRIPTIVE = ("seed", "run.dir", "run.resume")


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One run of a sweep, before it is pinned to a revision.

    ``overrides`` holds the block's own keys for this run (hpset excluded); ``config``
    is the fully resolved and validated config.
    """

    block: int
    hpset: str | None
    overrides: dict[str, Any]
    config: Config

    @property
    def seed(self) -> int:
        return self.config.seed


def load_sweep(path: str | Path) -> list[dict[str, Any]]:
    """Read a sweep file: a YAML list of mappings (one mapping is accepted as a list of one)."""
    path = Path(path)
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise ConfigError(f"sweep file {path} {what} (a relative path is read from the current "
                          f"directory, {Path.cwd()}); pass a YAML file of experiment blocks "
                          "(`marl sweep --help` shows one)")
    try:
        blocks = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {yaml_error_text(error)}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"sweep file {path} cannot be read: {error}") from None
    if isinstance(blocks, dict):
        blocks = [blocks]
    if not isinstance(blocks, list) or not blocks:
        raise ConfigError(
            f"{path}: expected a YAML list of experiment blocks (`- hpset: ippo_tiny`), got "
            f"{'an empty file' if blocks is None else type(blocks).__name__}")
    folder = path.resolve().parent
    for index, block in enumerate(blocks):
        if not isinstance(block, dict):
            raise ConfigError(
                f"{path}: block {index + 1} is {block!r} ({type(block).__name__}); expected a "
                "YAML list of experiment blocks, each a mapping of config keys "
                "(`- hpset: ippo_tiny`)")
        if "config" in block:
            block["config"] = _config_files(index, block, folder)
    return blocks


def _config_files(index: int, block: Mapping[str, Any], folder: Path) -> str | list[str]:
    """A block's ``config`` file(s) as absolute paths, relative ones read from ``folder``."""
    value = block["config"]
    files = value if isinstance(value, list) else [value]
    if not files or not all(isinstance(file, str) and file for file in files):
        raise ConfigError(f"{_label(index, block)}: config: expected a YAML file path or a "
                          f"list of them (`config: base.yaml`), got {value!r}")
    resolved = [str(folder / file) for file in files]  # an absolute file stays as it is
    return resolved if isinstance(value, list) else resolved[0]


def _is_list_typed(hint: Any) -> bool:
    """True if the config field itself holds a list (``list[int]``, ``list[int] | None``)."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (
        typing.Union, types.UnionType) else (hint,)
    return any(typing.get_origin(option) in (list, tuple) for option in options)


def _grid_values(key: str, value: Any, keys: Mapping[str, tuple[Any, str]]) -> list[Any]:
    """The values a block key takes: several for a grid, one otherwise."""
    if not isinstance(value, list):
        return [value]
    if key in keys and _is_list_typed(keys[key][0]):
        is_grid = len(value) > 0 and all(isinstance(v, list) for v in value)
        return list(value) if is_grid else [value]
    if not value:
        raise ConfigError(f"{key}: an empty list gives no runs; give at least one value")
    return list(value)


def _label(index: int, block: Mapping[str, Any]) -> str:
    name = block.get("name")
    return f"block {index + 1}" + (f" ({name!r})" if name else "")


def expand_block(index: int, block: Mapping[str, Any]) -> list[RunSpec]:
    """All runs of one block: the grid of its list-valued keys times ``repeat`` seeds."""
    keys = flat_keys()
    hpset = block.get("hpset")
    repeat = block.get("repeat", 1)
    if not isinstance(repeat, int) or isinstance(repeat, bool) or repeat < 1:
        raise ConfigError(f"{_label(index, block)}: repeat must be a positive integer, got "
                          f"{repeat!r} (for example `repeat: 3`)")
    own = flatten({k: v for k, v in block.items() if k not in SPECIAL_KEYS})
    runs: list[RunSpec] = []
    try:
        grid = {key: _grid_values(key, value, keys) for key, value in own.items()}
        hpsets = hpset if isinstance(hpset, list) else [hpset]
        if not hpsets:
            raise ConfigError("hpset: an empty list gives no runs; give at least one name")
        files = block.get("config")
        files = files if isinstance(files, list) else [files]
        axes = itertools.product(hpsets, files, itertools.product(*grid.values()))
        for name, file, combination in axes:
            overrides = dict(zip(grid, combination, strict=True))
            base_seed = overrides.pop("seed", load(file, {}, hpset=name).seed)
            for offset in range(repeat):
                updates = {**overrides, "seed": base_seed + offset}
                runs.append(RunSpec(index, name, updates, load(file, updates, hpset=name)))
    except FileNotFoundError as error:
        raise ConfigError(f"{_label(index, block)}: config: no such file {error.filename} (a "
                          "relative path is read from the sweep file's folder)") from error
    except (ConfigError, TypeError) as error:
        raise ConfigError(f"{_label(index, block)}: {error}") from error
    return runs


def expand(blocks: Sequence[Mapping[str, Any]]) -> list[RunSpec]:
    """Every run of a sweep, in file order; all configs are validated here."""
    return [run for index, block in enumerate(blocks) for run in expand_block(index, block)]


def flat_values(config: Any, prefix: str = "") -> dict[str, Any]:
    """The config's values by dotted key (a cheap :func:`marl.config.flatten` of a Config)."""
    values: dict[str, Any] = {}
    for item in dataclasses.fields(config):
        value = getattr(config, item.name)
        if dataclasses.is_dataclass(value):
            values.update(flat_values(value, f"{prefix}{item.name}."))
        else:
            values[prefix + item.name] = value
    return values


def _descriptive_values(config: Any) -> dict[str, Any]:
    """:func:`flat_values`, with mapping values (``env.kwargs``, ``env.groups``) opened up
    into dotted sub-keys, so a descriptor names the entry that differs."""
    values: dict[str, Any] = {}

    def put(key: str, value: Any) -> None:
        if isinstance(value, dict):  # an empty mapping adds no key
            for sub, item in value.items():
                put(f"{key}.{sub}", item)
        else:
            values[key] = value

    for key, value in flat_values(config).items():
        put(key, value)
    return values


def varying_keys(runs: Sequence[RunSpec]) -> list[str]:
    """Config keys whose resolved value differs between runs (seed and run.* excluded).

    Entries of mapping-valued keys count one by one (``env.kwargs.N``); an entry that some
    runs lack is ``None`` in theirs.
    """
    flats = [_descriptive_values(run.config) for run in runs]
    keys = list(dict.fromkeys(key for flat in flats for key in flat))
    return [key for key in keys
            if key not in _NOT_DESCRIPTIVE
            and len({_format(flat.get(key)) for flat in flats}) > 1]


def _format(value: Any) -> str:
    """A compact, file-name-safe rendering of a config value."""
    if isinstance(value, (list, tuple)):
        text = "-".join(_format(v) for v in value)
    elif isinstance(value, dict):
        text = ",".join(f"{k}:{_format(v)}" for k, v in sorted(value.items()))
    else:
        text = str(value)
    return re.sub(r"[^A-Za-z0-9_.,:+=-]+", "-", text)


def revision_label(revision: str, diff: str = "") -> str:
    """The short revision, plus ``-dirty<hash of the diff>`` for uncommitted changes."""
    if not diff:
        return revision[:7]
    return f"{revision[:7]}-dirty{hashlib.sha256(diff.encode()).hexdigest()[:6]}"


def descriptor(label: str, run: RunSpec, keys: Sequence[str]) -> str:
    """``<label>__key=value__...`` over the sweep's ``keys`` that vary, seed excluded.

    ``label`` is :func:`revision_label`'s: runs of different code never share a name.
    """
    flat = _descriptive_values(run.config)
    parts = [label] + [f"{key}={_format(flat.get(key))}" for key in keys]
    return "__".join(parts)

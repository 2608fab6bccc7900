"""Configuration files: what ``--config FILE`` reads and what every run writes.

A file is YAML (``.yaml``/``.yml``) or TOML (``.toml``) holding config fields by their
config names (``specs/configuration.md``), either in sections named after the configs::

    model:      {gridsize: 2, n_filters_scale: 1}
    training:   {train_data_file: train.npz, nepochs: 30}
    execution:  {accelerator: cpu, learning_rate: 2.0e-3}

or flat (``nepochs: 30``): a flat key belongs to the one config that has that field. A few
legacy names are accepted for their fields (:data:`KEY_ALIASES`). An unknown key is a
``ConfigError`` naming the key and the nearest valid one. Every run writes the configs it
used to ``<output_dir>/resolved_config.yaml`` (:func:`write_config_file`), a file
``--config`` accepts, so any run can be repeated exactly.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ptychopinn._io import atomic_write_text
from ptychopinn.config import (
    ConfigError,
    ExecutionConfig,
    InferenceConfig,
    ModelConfig,
    TrainingConfig,
)

__all__ = [
    "CONFIG_FILENAME",
    "KEY_ALIASES",
    "SECTION_CLASSES",
    "read_config_file",
    "section_fields",
    "write_config_file",
]

#: Name of the resolved configuration every run writes into its output directory.
CONFIG_FILENAME = "resolved_config.yaml"
#: Section name -> config class.
SECTION_CLASSES: dict[str, type] = {
    "model": ModelConfig,
    "training": TrainingConfig,
    "inference": InferenceConfig,
    "execution": ExecutionConfig,
}
#: Legacy names (the seeds' command-line and config names) -> our field names.
KEY_ALIASES: dict[str, str] = {
    "n_images": "n_groups",
    "max_epochs": "nepochs",
    "epochs": "nepochs",
    "val_split": "validation_fraction",
    "torch_loss_mode": "loss_mode",
    "middle_trim": "stitch_crop_px",
}
_SUFFIXES = (".yaml", ".yml", ".toml")


def section_fields(section: str) -> dict[str, dataclasses.Field]:
    """The fields a section may set (``training`` without its nested ``model``)."""
    cls = SECTION_CLASSES[section]
    return {f.name: f for f in dataclasses.fields(cls) if f.name != "model"}


def _nearest(key: str, candidates: Sequence[str]) -> str:
    match = difflib.get_close_matches(key, candidates, n=1, cutoff=0.0)
    return match[0] if match else ""


def _parse(path: Path) -> Any:
    if path.suffix.lower() not in _SUFFIXES:
        raise ConfigError(f"{path}: a config file must end in .yaml, .yml or .toml")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc})") from None
    if path.suffix.lower() == ".toml":
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    import yaml

    try:
        return yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        reason = " ".join(str(exc).split())
        raise ConfigError(f"{path}: not valid YAML ({reason})") from None


def _coerce(field: dataclasses.Field, value: Any) -> Any:
    """Undo what YAML/TOML cannot say: ``none`` for None (TOML has no null) and numbers
    written as strings (YAML 1.1 reads ``1e-3`` as a string). The config validates."""
    kind = str(field.type)
    if isinstance(value, str):
        if "None" in kind and value.strip().lower() in ("none", "null", "~"):
            return None
        if kind.startswith(("float", "int")) and "str" not in kind:
            try:
                number = float(value)
            except ValueError:
                return value
            return int(number) if kind.startswith("int") and number.is_integer() else number
    return value


def read_config_file(path: str | os.PathLike[str], sections: Sequence[str]) -> dict[str, dict]:
    """``{section: {field: value}}`` from a YAML/TOML file, for a command whose configs
    are ``sections`` (e.g. ``("model", "training", "execution")``).

    Raises:
        ConfigError: unreadable file, not a mapping, or a key that no section has (the
            message names the key and the nearest valid key).
    """
    path = Path(path)
    data = _parse(path)
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: expected a mapping of config keys, got "
                          f"{type(data).__name__}")
    fields = {s: section_fields(s) for s in sections}
    owner: dict[str, str] = {}
    for section in sections:
        for name in fields[section]:
            owner.setdefault(name, section)
    valid = sorted(set(owner) | set(KEY_ALIASES) | set(sections))
    values: dict[str, dict] = {s: {} for s in sections}

    def put(section: str, key: str, value: Any) -> None:
        name = KEY_ALIASES.get(key, key)
        if name not in fields[section]:
            nearest = _nearest(key, sorted(set(owner) | set(KEY_ALIASES)))
            home = owner[KEY_ALIASES.get(nearest, nearest)]
            hint = f"{nearest!r}" + (f" (section {home!r})" if home != section else "")
            raise ConfigError(f"{path}: unknown key {key!r} in section {section!r}; "
                              f"did you mean {hint}?")
        if name in values[section]:
            raise ConfigError(f"{path}: {name!r} is given twice")
        values[section][name] = _coerce(fields[section][name], value)

    for key, value in data.items():
        key = str(key)
        if key in sections and isinstance(value, Mapping):
            for sub_key, sub_value in value.items():
                put(key, str(sub_key), sub_value)
        elif KEY_ALIASES.get(key, key) in owner:
            put(owner[KEY_ALIASES.get(key, key)], key, value)
        else:
            raise ConfigError(f"{path}: unknown key {key!r}; did you mean "
                              f"{_nearest(key, valid)!r}?")
    return values


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value.resolve())
    return value


def write_config_file(path: str | os.PathLike[str], configs: Mapping[str, Any],
                      command: str) -> Path:
    """Write ``{section: config}`` as YAML that ``--config`` reads back to equal configs
    (paths made absolute, so the file works from any directory); atomic."""
    import yaml

    document: dict[str, dict[str, Any]] = {}
    for section, config in configs.items():
        document[section] = {name: _plain(getattr(config, name))
                             for name in section_fields(section)}
    header = (f"# Resolved configuration of a `{command}` run.\n"
              f"# Repeat it with: {command} --config {Path(path).name}\n")
    text = header + yaml.safe_dump(document, sort_keys=False, default_flow_style=False)
    atomic_write_text(path, text)
    return Path(path)

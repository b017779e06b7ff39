"""Load and check an nnictl experiment YAML before anything is launched.

NNI's own `ExperimentConfig` checks the NNI part; a resnas tuner's `classArgs` go through its method's parser
(strategies.methods), so a typo in a method setting fails here, in one sentence, instead of in the
dispatcher after launch.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A config that cannot be launched; the message is one sentence naming the fix."""


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _valid_keys() -> list[str]:
    from nni.experiment.config import ExperimentConfig

    return sorted(_camel(field.name) for field in dataclasses.fields(ExperimentConfig))


def _unknown_key_sentence(path: Path, key: str) -> str:
    match = difflib.get_close_matches(key, _valid_keys(), n=1)
    hint = f"; did you mean {match[0]!r}?" if match else "; see nnictl's ExperimentConfig reference for valid keys."
    return f"{path}: unknown key {key!r}{hint}"


def load_experiment_config(path: str | Path) -> dict[str, Any]:
    """Read and validate an nnictl YAML; returns the canonical config dict NNI would launch."""
    from nni.experiment.config import ExperimentConfig

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path} does not exist; pass one of the files in nni_configs/.")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML ({str(error).splitlines()[0]}); fix the syntax.") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a YAML mapping of nnictl settings.")
    valid = set(_valid_keys())
    for key in raw:
        if key not in valid:
            raise ConfigError(_unknown_key_sentence(path, key))
    try:
        config = ExperimentConfig.load(str(path))
        config.validate()
    except Exception as error:  # noqa: BLE001 - NNI raises several types; the user needs one sentence
        message = " ".join(str(error).split())
        unknown = re.search(r"unexpected keyword argument '(\w+)'", message)
        if unknown:
            raise ConfigError(_unknown_key_sentence(path, unknown.group(1))) from None
        raise ConfigError(f"{path}: {message}") from None
    canonical = config.json()
    tuner = canonical.get("tuner") or {}
    from ..methods import method_of_tuner

    method = method_of_tuner(tuner.get("className", ""))
    if method is not None:
        try:
            method.parse_class_args(tuner.get("classArgs") or {}, "tuner.classArgs")
        except ValueError as error:
            raise ConfigError(f"{path}: {error}") from None
    return canonical

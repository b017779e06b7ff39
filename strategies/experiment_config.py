"""Load and check an nnictl experiment YAML before anything is launched.

NNI's own `ExperimentConfig` checks the NNI part; resnas tuners register a parser for their `classArgs`,
so a typo in a method setting fails here, in one sentence, instead of in the dispatcher after launch.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from pathlib import Path
from typing import Any, Callable

import yaml


class ConfigError(ValueError):
    """A config that cannot be launched; the message is one sentence naming the fix."""


# tuner className -> a parser that raises ValueError (one sentence) on bad classArgs
CLASS_ARGS_VALIDATORS: dict[str, Callable[[dict], Any]] = {}


def register_class_args_validator(class_name: str, validator: Callable[[dict], Any]) -> None:
    if class_name in CLASS_ARGS_VALIDATORS and CLASS_ARGS_VALIDATORS[class_name] is not validator:
        raise ValueError(f"a classArgs validator for {class_name} is already registered.")
    CLASS_ARGS_VALIDATORS[class_name] = validator


def _register_resnas_tuners() -> None:
    from .hill_climbing_tuner import HillClimbingTuner, parse_hill_climbing_args
    from .layer_pruning_tuner import LayerPruningTuner, parse_layer_pruning_args
    from .proxyless_tuner import ProxylessTuner, parse_tuner_args

    for tuner, parser in (
        (ProxylessTuner, parse_tuner_args),
        (HillClimbingTuner, parse_hill_climbing_args),
        (LayerPruningTuner, parse_layer_pruning_args),
    ):
        CLASS_ARGS_VALIDATORS.setdefault(f"{tuner.__module__}.{tuner.__name__}", parser)


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
    _register_resnas_tuners()
    validator = CLASS_ARGS_VALIDATORS.get(tuner.get("className", ""))
    if validator is not None:
        try:
            validator(tuner.get("classArgs") or {})
        except ValueError as error:
            raise ConfigError(f"{path}: {error}") from None
    return canonical

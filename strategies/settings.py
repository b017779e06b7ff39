"""Typed settings built once at the edge from a YAML `classArgs` dict or trial parameters.

A typo is an error naming the valid keys (with the closest match), never a silently ignored value. Options
with a fixed set of values are one `Literal` alias each; `choices(alias)` gives the tuple.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, TypeVar

T = TypeVar("T")


class SettingsError(ValueError):
    """Settings that cannot be used; the message is one sentence naming the fix."""


def _closest(name: str, valid: list[str]) -> str:
    match = difflib.get_close_matches(name, valid, n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _accepts(annotation: Any, value: Any) -> bool:
    """A shallow type check for the plain JSON types settings use."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(arg, value) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (tuple, list):
        return isinstance(value, (list, tuple))
    if origin is typing.Literal:
        return value in typing.get_args(annotation)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


def parse_settings(cls: type[T], data: dict[str, Any] | None, where: str) -> T:
    """Build the dataclass `cls` from `data`, refusing unknown keys and values of the wrong type."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    fields = {field.name: field for field in dataclasses.fields(cls)}
    valid = sorted(fields)
    for key, value in data.items():
        if key not in fields:
            raise SettingsError(
                f"{where}: unknown key {key!r}{_closest(key, valid)}; valid keys are {', '.join(valid)}."
            )
        if not _accepts(hints[key], value):
            raise SettingsError(f"{where}: {key}={value!r} is not a valid {_type_name(hints[key])}.")
        if typing.get_origin(hints[key]) is tuple and isinstance(value, list):
            data[key] = tuple(value)
    missing = [name for name, field in fields.items() if _is_required(field) and name not in data]
    if missing:
        raise SettingsError(f"{where}: missing required key {missing[0]!r}.")
    settings = cls(**data)
    check = getattr(settings, "check", None)
    if check is not None:
        check(where)
    return settings


def _is_required(field: dataclasses.Field) -> bool:
    return field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING


def _type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) is typing.Literal:
        return "one of " + ", ".join(repr(arg) for arg in typing.get_args(annotation))
    return getattr(annotation, "__name__", str(annotation))


def choices(literal: Any) -> tuple[str, ...]:
    """The values of a `Literal[...]` option alias: the one list an option's valid names come from."""
    return typing.get_args(literal)


def require_choice(value: str, valid: typing.Iterable[str], what: str, where: str) -> None:
    valid = list(valid)
    if value not in valid:
        raise SettingsError(
            f"{where}: unknown {what} {value!r}{_closest(value, valid)}; use one of {', '.join(valid)}."
        )


@dataclass(frozen=True)
class ArtifactSettings:
    """The multi-trial methods' one shared setting, listed first among their bases so its check runs before
    DataSettings' (`class HillClimbingSettings(ArtifactSettings, DataSettings)`)."""

    # Where the tuner keeps job folders and its state file, one subfolder per experiment id: a folder mounted at
    # the same path on the manager's machine and every worker (NNI's remote training service shares none).
    # None: the experiment's checkpoint folder on the manager's machine, which only local trials can see.
    artifact_dir: str | None = None

    def check(self, where: str) -> None:
        inherited = getattr(super(), "check", None)  # the next base in the method's settings: DataSettings
        if inherited is not None:
            inherited(where)
        if self.artifact_dir is not None and not PurePosixPath(self.artifact_dir).is_absolute():
            raise SettingsError(f"{where}: artifact_dir {self.artifact_dir!r} is relative, so the manager and each "
                                f"worker would read it from another folder; give the absolute path of the shared "
                                f"mount.")

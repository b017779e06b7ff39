"""Checks of a config whose tuner is one of NNI's built-in ones (Random, TPE, ...) searching a resnas space: the
trial command names the settings file, and the config's searchSpace is the one `resnas space` writes from it.

Otherwise a stale searchSpace (a hand edit, a space changed since) would pass validation and every trial would
fail on a label the space no longer has, or silently never try a candidate.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

from .trial_command import ENTRY_POINT

_RUNS_ENTRY_POINT = re.compile(rf"-m\s+{re.escape(ENTRY_POINT)}(\s|$)")


def settings_file_of(command: str) -> str | None:
    """The FILE of `--settings FILE` (or `--settings=FILE`) in a trial command that runs strategies.trial."""
    if not _RUNS_ENTRY_POINT.search(command):
        return None
    try:
        words = shlex.split(command)
    except ValueError:
        return None
    for index, word in enumerate(words):
        if word == "--settings" and index + 1 < len(words):
            return words[index + 1]
        if word.startswith("--settings="):
            return word.split("=", 1)[1]
    return None


def builtin_tuner_problem(path: Path, config: dict[str, Any]) -> tuple[str | None, Any]:
    """(one sentence, or None; the paired method's settings for the data check, or None) of a config whose
    tuner is NNI's built-in `name`. Configs that run no resnas trial are not resnas's business: (None, None)."""
    from ..sampled import read_settings_file
    from ..settings import SettingsError

    command = config.get("trialCommand") or ""
    tuner = (config.get("tuner") or {}).get("name")
    settings_file = settings_file_of(command)
    if settings_file is None:
        if _RUNS_ENTRY_POINT.search(command):
            return (f"{path}: the {tuner} tuner sends the resnas trial only the sampled choices, and trialCommand "
                    f"{command!r} names no settings file; add --settings FILE (see nni_configs/sampled/).", None)
        return None, None
    code_dir = Path(config.get("trialCodeDirectory") or path.parent)
    try:
        settings = read_settings_file(code_dir / settings_file)
    except SettingsError as error:
        return f"{path}: {' '.join(str(error).split())}", None
    if config.get("searchSpace") != settings.search_space():
        return (f"{path}: its searchSpace is not the space {settings_file} defines; regenerate it with "
                f"`resnas space {settings_file} -o FILE` and name FILE in searchSpaceFile.", None)
    return None, settings.paired()

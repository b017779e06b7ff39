"""Does a config's trialCommand run something that exists? Checked before launch, without running it.

Otherwise a typo in the module name passes validation and fails every trial. `python -m NAME` must be findable
from trialCodeDirectory (by path: no package __init__ runs here), `python FILE` must be a file there, and a resnas
tuner's trials must run the resnas entry point, the only code that reads its parameters.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import re
import shlex
import sys
from pathlib import Path
from typing import Any

ENTRY_POINT = "strategies.trial"  # the one trial every resnas tuner's parameters are meant for
_SHELL_SYNTAX = re.compile(r"[;&|<>`$()]")  # a command with these is a script of its own: not checked word by word
_PYTHON = re.compile(r"python[\d.]*$")


def _python_target(command: str) -> tuple[str, str] | None:
    """("module", NAME) for `python -m NAME ...`, ("script", FILE) for `python FILE ...`; None for anything else."""
    if _SHELL_SYNTAX.search(command):
        return None
    try:
        words = shlex.split(command)
    except ValueError:
        return None
    while words and re.match(r"^\w+=", words[0]):  # VAR=value prefixes (OMP_NUM_THREADS=1 python ...)
        words = words[1:]
    if not words or not _PYTHON.match(Path(words[0]).name):
        return None
    options = iter(words[1:])
    for word in options:
        if word == "-m":
            return ("module", next(options, ""))
        if word == "-c":
            return None
        if word in ("-W", "-X"):  # options that take a value
            next(options, None)
        elif not word.startswith("-"):
            return ("script", word)
    return None


def _module_problem(name: str, code_dir: Path) -> str | None:
    """Why `python -m NAME` run in code_dir would not start, or None; finds without importing (running) NAME."""
    parts = name.split(".")
    if not all(part.isidentifier() for part in parts):
        return f"{name!r} is not a module name"
    sys.path.insert(0, str(code_dir))  # as the trial sees it: its working directory comes first
    try:
        spec = importlib.util.find_spec(parts[0])
    except (ImportError, ValueError):
        spec = None
    finally:
        sys.path.remove(str(code_dir))
    for part in parts[1:]:  # submodules by path, so no package __init__ runs here
        locations = spec.submodule_search_locations if spec is not None else None
        spec = importlib.machinery.PathFinder.find_spec(part, list(locations)) if locations else None
    if spec is None:
        return f"no module {name!r} can be found from trialCodeDirectory {code_dir}"
    locations = spec.submodule_search_locations
    if locations is not None and importlib.machinery.PathFinder.find_spec("__main__", list(locations)) is None:
        return f"{name!r} is a package without a __main__ module"
    return None


def trial_command_problem(path: Path, config: dict[str, Any], tuner_class: str | None, local: bool) -> str | None:
    """Why the config's trial command would not run its trials (one sentence), or None when it would: it must run
    something that exists, and a module it runs for a resnas tuner must be the resnas trial (a script may be the
    user's own wrapper around it, or a test's stand-in trial)."""
    command = config.get("trialCommand") or ""
    code_dir = Path(config.get("trialCodeDirectory") or path.parent)
    target = _python_target(command)
    if tuner_class is not None and (target is None or target[0] == "module"):
        runs_entry_point = target == ("module", ENTRY_POINT) or (
            target is None and re.search(rf"-m\s+{re.escape(ENTRY_POINT)}(\s|$)", command))
        if not runs_entry_point:
            return (f"{path}: trialCommand {command!r} does not run the resnas trial, the only one that "
                    f"reads {tuner_class}'s parameters; set trialCommand: python -m {ENTRY_POINT}.")
    if target is None:
        return None
    kind, name = target
    if kind == "script" and not (code_dir / name).is_file():
        return (f"{path}: trialCommand {command!r} runs {name}, which is not a file under "
                f"trialCodeDirectory {code_dir}; fix the file name or trialCodeDirectory.")
    # Remote workers have their own Python: a module may be installed there and not here.
    problem = _module_problem(name, code_dir) if kind == "module" and local else None
    if problem:
        return f"{path}: trialCommand {command!r} cannot start: {problem}; fix the module name or trialCodeDirectory."
    return None

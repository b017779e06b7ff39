"""`resnas space SETTINGS`: NNI's searchSpace of a resnas space, for the built-in tuners (Random, TPE, Evolution,
GridSearch), generated from the space itself, never copied by hand.

    resnas space nni_configs/sampled/scope_m_digits.settings.yml -o nni_configs/sampled/scope_m_digits.space.json

The config then names the file (`searchSpaceFile:`) and the settings (`trialCommand: python -m strategies.trial
--settings nni_configs/sampled/scope_m_digits.settings.yml`); `resnas validate` checks that the two agree.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .errors import UserError

HELP = "write NNI's searchSpace (for Random, TPE, Evolution) of the space a built-in tuner's settings file names"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("settings", type=Path, help="a settings file, e.g. nni_configs/sampled/scope_m_digits.settings.yml")
    parser.add_argument("-o", "--out", type=Path, help="the JSON file to write (default: print it)")


def search_space_text(settings_file: Path) -> str:
    """The searchSpace JSON of the settings file's space, as `resnas space` writes it (one fixed layout)."""
    from ..sampled import read_settings_file
    from ..settings import SettingsError

    try:
        space = read_settings_file(settings_file).search_space()
    except SettingsError as error:
        raise UserError(str(error)) from None
    return json.dumps(space, indent=2) + "\n"


def run(args: argparse.Namespace) -> int:
    text = search_space_text(args.settings)
    if args.out is None:
        print(text, end="")
        return 0
    from trainers.atomic import atomic_write_text

    atomic_write_text(args.out, text)
    print(f"{args.out}: {len(json.loads(text))} choices")
    return 0

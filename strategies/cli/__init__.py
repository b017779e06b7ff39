"""The `resnas` command line (`strategies.cli:main`, or `python -m strategies.cli`)."""

from .main import main

__all__ = ["main"]

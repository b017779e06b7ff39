"""matplotlib for the figures the methods draw (headless: the dispatcher and CI have no display).

Each method's figure lives in its package (`hill_climbing/plot.py`, ...); matplotlib is imported on the first
draw, never at tuner start.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, NamedTuple


class Figure(NamedTuple):
    """A method's figure: its file name beside the job folders, and the function that draws it from the state."""

    file_name: str
    draw: Callable[[dict[str, Any], Path], Path]


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(plt, figure, path: Path, dpi: int = 110) -> Path:
    """Written beside `path`, then moved over it: a dashboard or viewer never reads half a PNG."""
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_suffix(".tmp.png")
    figure.savefig(staging, dpi=dpi)
    plt.close(figure)
    staging.replace(path)
    return path

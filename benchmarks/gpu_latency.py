"""The GPU check's latency job (issue 23): a latency table for the device, calibrated, and the predictor's check.

The same steps as benchmarks/latency_check.py on fewer architectures (a few per space), so that the lent GPU's
few minutes give the +-10 % share and the device's own repeatability (the same network timed twice) beside the
CPU figures in docs/latency.md. The tiny preset (CPU, the suite's smoke run) swaps in a quick timer.
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import Any

import torch

from search_spaces.latency import SynchronisedTimer, device_settings, locked_table, use_timer
from search_spaces.latency_check import SpaceSetup, check_predictions, fill_table


def latency_check(device: torch.device, spaces: tuple[str, ...], count: int, batch_size: int,
                  quick: bool = False) -> dict[str, Any]:
    """Table of `spaces`' parts on `device` (batch `batch_size`, fp32), 2 calibration networks per space, `count`
    checked per space; the summary by the table's statistic, per space, and the repeatability."""
    settings = device_settings(device.type, batch_size, threads=None if device.type == "cuda" else 1)
    setup = SpaceSetup()
    timer = use_timer(SynchronisedTimer(warmup_runs=1, runs=3, min_run_ms=1.0)) if quick else contextlib.nullcontext()
    with tempfile.TemporaryDirectory() as folder, timer:
        path = Path(folder) / "table.json"
        with locked_table(path, settings) as table:
            fill_table(table, list(spaces), setup, calibrate_per_space=2)
            entries, overheads = len(table.entries), dict(table.overheads)
        report = check_predictions(path, settings, list(spaces), count)

    def within(summary: dict[str, Any]) -> float | None:
        return round(summary["within_10_percent"], 3) if summary.get("architectures") else None

    return {"device": report["device"], "statistic": report["statistic"], "entries": entries,
            "overheads_ms": overheads, "summary": report["summary"],
            "within_10_percent_by_space": {space: within(s) for space, s in report["by_space"].items()},
            "summary_median": report["summary_median"], "repeatability": report["repeatability"],
            "rows": report["rows"]}

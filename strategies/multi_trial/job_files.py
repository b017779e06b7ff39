"""The job-folder protocol between a multi-trial tuner and its trials (no torch: the tuner reads it too).

A job's folder holds model.ckpt (weights + ArchSpec), arch.json (the ArchSpec, for the tuner) and
result.json, each written atomically; result.json is written last, so its presence means the job is complete.
A trial whose folder has a result reports it again and trains nothing: re-issued jobs cost seconds.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from trainers.atomic import atomic_write_text

logger = logging.getLogger(__name__)

MODEL_FILE, SPEC_FILE, RESULT_FILE = "model.ckpt", "arch.json", "result.json"


def finished_result(out_dir: Path) -> dict[str, Any] | None:
    path = out_dir / RESULT_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        logger.warning("%s is unreadable; running the job again", path)
        return None


def write_result(out_dir: Path, result: dict[str, Any]) -> None:
    """Written last: its presence means the checkpoint beside it is complete."""
    atomic_write_text(out_dir / RESULT_FILE, json.dumps(result, indent=1, sort_keys=True))

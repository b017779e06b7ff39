"""A multi-trial search's state file: every job's status and result, rewritten atomically after every event.

`~/nni-experiments/ID/checkpoint/resnas_state.json` by default (NNI's checkpoint folder for the dispatcher).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

STATE_FILE = "resnas_state.json"
PENDING, ISSUED, DONE, FAILED = "pending", "issued", "done", "failed"
ENDED = (DONE, FAILED)


def experiment_checkpoint_dir() -> Path:
    """The experiment's checkpoint folder NNI gives the dispatcher (~/nni-experiments/ID/checkpoint)."""
    folder = os.environ.get("NNI_CHECKPOINT_DIRECTORY")
    return Path(folder) if folder else Path("runs") / "tuner"


def load_state(path: Path) -> dict[str, Any] | None:
    """The saved state, or None when there is none; a corrupt file is reported and treated as none."""
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        logger.error("tuner state %s is unreadable (%s); starting the search over", path, error)
        return None
    return state if isinstance(state, dict) and "jobs" in state else None

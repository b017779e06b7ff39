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


class StateError(ValueError):
    """A state file that cannot be read; one sentence naming the fix. The file is left as it is."""


def load_state(path: Path) -> dict[str, Any] | None:
    """The saved state, or None when there is none.

    A corrupt file raises StateError instead of counting as none: starting over would overwrite the record of
    every finished job (hours of training) with an empty search.
    """
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        reason = " ".join(str(error).split())
        raise StateError(f"the search's state file {path} is unreadable ({reason}); restore it, or move it away to "
                         "start the search over (the job folders beside it are kept and finished jobs report "
                         "their results again)") from None
    if not isinstance(state, dict) or "jobs" not in state:
        raise StateError(f"{path} is not a resnas search state (no 'jobs'); move it away to start the search over")
    return state

"""A multi-trial search's state file: every job's status and result, rewritten atomically after every event.

`~/nni-experiments/ID/checkpoint/resnas_state.json` by default (NNI's checkpoint folder for the dispatcher),
with the job folders beside it. With the `artifact_dir` setting (a folder every machine mounts at the same path,
for NNI's remote training service) both live in `ARTIFACT_DIR/ID/` instead, and the checkpoint folder keeps a
one-line pointer to the state file (STATE_POINTER): `resnas plot`, `resnas status` and `--wait` find it through
locate_state_file without knowing the rule that named the folder.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from pathlib import Path
from typing import Any

from trainers.atomic import atomic_write_text

from ..settings import SettingsError

logger = logging.getLogger(__name__)

STATE_FILE = "resnas_state.json"
STATE_POINTER = "resnas_state.location"  # in the checkpoint folder: the state file's absolute path, when elsewhere
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


def search_folders(artifact_dir: str | None, state_dir: str | Path | None) -> tuple[Path, Path]:
    """(artifact root, state folder) of a search: the root is what trial parameters carry as `artifact_dir` (a
    worker that mounts it elsewhere swaps it, job_files.resolve_job_paths); the state folder holds the state file
    and the job folders.

    An explicit state_dir (the in-process search, tests) is both. Otherwise artifact_dir/ID for an artifact_dir
    (ID: the experiment's, from NNI's checkpoint folder ~/nni-experiments/ID/checkpoint, so two experiments
    sharing one artifact_dir keep apart), or the experiment's checkpoint folder as before artifact_dir existed.
    """
    if state_dir:
        return Path(state_dir), Path(state_dir)
    checkpoint = experiment_checkpoint_dir()
    if artifact_dir is None:
        return checkpoint, checkpoint
    root = Path(artifact_dir)
    if not root.is_dir():
        raise SettingsError(f"artifact_dir {root} is not a folder on the manager's machine ({socket.gethostname()}); "
                            "mount the shared filesystem there, at the same path as on every worker, or create it.")
    experiment = checkpoint.parent.name if os.environ.get("NNI_CHECKPOINT_DIRECTORY") else "local"
    state_folder = root / experiment
    state_folder.mkdir(exist_ok=True)
    checkpoint.mkdir(parents=True, exist_ok=True)
    atomic_write_text(checkpoint / STATE_POINTER, str(state_folder.resolve() / STATE_FILE))
    return root, state_folder


def locate_state_file(checkpoint_dir: Path) -> Path:
    """Where an experiment's state file is: in its checkpoint folder, or where that folder's pointer says (an
    artifact_dir search); the checkpoint folder's own path when neither exists (for "no state at ..." messages)."""
    here = checkpoint_dir / STATE_FILE
    if here.is_file():
        return here
    try:
        return Path((checkpoint_dir / STATE_POINTER).read_text().strip())
    except (OSError, UnicodeDecodeError):
        return here

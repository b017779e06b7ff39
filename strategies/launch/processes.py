"""An experiment's own processes, found by its folder or id (never by a broad name such as "nni").

NNI starts the tuner as `python -m nni --exp_params ...` (under `/bin/sh -c`) with NNI_CHECKPOINT_DIRECTORY set to
the experiment's checkpoint folder, and the manager as `node .../main.js ... --experiment-id ID`. After SIGKILL
of the manager its tuner survives and keeps reconnecting to the same port: a manager resumed on that port loses
its tuner channel to it ("received 4001 new epoch start") and goes to ERROR. Resume therefore ends the orphan
first; while following an experiment, a missing tuner means it died.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

PROC = Path("/proc")


def _read(pid: str, name: str) -> bytes:
    try:
        return (PROC / pid / name).read_bytes()
    except OSError:  # gone meanwhile, or another user's process
        return b""


def _pids() -> list[str]:
    try:
        return [entry.name for entry in PROC.iterdir() if entry.name.isdigit() and int(entry.name) != os.getpid()]
    except OSError:
        return []


def tuner_pids(experiment_folder: Path) -> list[int]:
    """The experiment's dispatcher (tuner) processes: the Python one and its shell."""
    wanted = b"NNI_CHECKPOINT_DIRECTORY=" + os.fsencode(str(Path(experiment_folder).resolve() / "checkpoint"))
    found = []
    for pid in _pids():
        command = _read(pid, "cmdline").replace(b"\0", b" ")
        if b"-m nni " not in command or b"--exp_params" not in command:
            continue
        if wanted in _read(pid, "environ").split(b"\0"):
            found.append(int(pid))
    return found


def manager_pids(experiment_id: str) -> list[int]:
    """The experiment's NNI manager (Node) processes, by the --experiment-id nnictl started them with."""
    needle = b"\0--experiment-id\0" + experiment_id.encode() + b"\0"
    return [int(pid) for pid in _pids() if b"main.js" in (command := _read(pid, "cmdline")) and needle in command + b"\0"]


def end_processes(pids: list[int], grace_seconds: float = 5.0) -> None:
    """SIGTERM, then SIGKILL what is still there after grace_seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace_seconds
        while (pids := [pid for pid in pids if (PROC / str(pid)).exists() and not _is_zombie(pid)]):
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        if not pids:
            return


def _is_zombie(pid: int) -> bool:
    status = _read(str(pid), "stat").split(b") ")
    return len(status) > 1 and status[1][:1] == b"Z"

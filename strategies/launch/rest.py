"""Follow a running experiment over NNI's REST API (on 127.0.0.1): its status, trials, summary, and waiting."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..multi_trial.state import load_state, locate_state_file
from ..reporting import decode_metric
from .watchdog import TunerWatch, failure_sentence, manager_error_line

FINAL_TRIAL_STATES = {"SUCCEEDED", "FAILED", "USER_CANCELED", "SYS_CANCELED", "EARLY_STOPPED"}
FINAL_EXPERIMENT_STATES = {"DONE", "STOPPED", "ERROR"}
DEFAULT_WORKING_DIR = Path("~/nni-experiments")  # NNI's, when a config sets no experimentWorkingDirectory
GONE_AFTER_FAILURES = 3  # REST calls failing in a row before the manager counts as dead
PollCallback = Callable[[str, list[dict]], None]  # (experiment status, trial-jobs list) after each poll


class LaunchError(RuntimeError):
    """The experiment could not be started or followed; one sentence naming the fix."""


class ExperimentFailed(LaunchError):
    """The experiment cannot go on (its manager is in ERROR, its tuner died); `--wait` ends with exit code 1."""


@dataclass
class ExperimentHandle:
    id: str
    port: int
    bind_host: str
    config_path: Path
    working_dir: Path = DEFAULT_WORKING_DIR  # the folder holding ID/ (experimentWorkingDirectory)
    token: str | None = None  # what the dashboard and REST API ask for (access_guard.js); None with --no-token

    @property
    def url(self) -> str:
        """The plain dashboard URL, safe to log: it carries no token."""
        host = "127.0.0.1" if self.bind_host in ("127.0.0.1", "0.0.0.0", "") else self.bind_host
        return f"http://{host}:{self.port}"

    @property
    def dashboard_url(self) -> str:
        """The URL to open once: the guard moves its token into a cookie and drops it from the address bar."""
        return f"{self.url}/?token={self.token}" if self.token else self.url

    @property
    def folder(self) -> Path:
        """The experiment's folder (experimentWorkingDirectory/ID), where NNI keeps logs, trials and checkpoints."""
        return self.working_dir.expanduser() / self.id

    @property
    def manager_log(self) -> Path:
        return self.folder / "log" / "nnimanager.log"


def manager_gone_error(handle: ExperimentHandle) -> LaunchError:
    """One sentence for a manager that stopped answering: its log's last error line, and where the log is."""
    line = manager_error_line(handle.manager_log)
    cause = f"its log says {line!r}" if line else "its log has no error line"
    return LaunchError(f"the NNI manager of experiment {handle.id} stopped answering ({cause}); see "
                       f"{handle.manager_log}, fix the cause and run `resnas resume {handle.id}`.")


def rest(port: int, route: str, token: str | None = None, timeout: float = 10.0) -> Any:
    headers = {"Authorization": f"token {token}"} if token else {}
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/nni/{route}", headers=headers)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read().decode() or "null")


def trial_jobs(handle: ExperimentHandle) -> list[dict]:
    return rest(handle.port, "trial-jobs", token=handle.token) or []


def experiment_status(handle: ExperimentHandle) -> str:
    return rest(handle.port, "check-status", token=handle.token)["status"]


def tuner_state(handle: ExperimentHandle) -> dict[str, Any] | None:
    """A resnas multi-trial tuner's state file (in the checkpoint folder, or where its pointer says: artifact_dir),
    or None for tuners without one (ProxylessTuner)."""
    return load_state(locate_state_file(handle.folder / "checkpoint"))


def wait_for_experiment(handle: ExperimentHandle, poll_seconds: float = 3.0, timeout: float | None = None,
                        on_poll: PollCallback | None = None) -> str:
    """Block until the experiment is done (or has no more trials and none is running).

    A multi-trial tuner says "no more trials" whenever it waits for a step's trials, so between two steps
    every trial has ended for a moment; for those tuners the search is over only when their state says so.
    A manager in ERROR or a tuner process that died raises ExperimentFailed (watchdog) instead of waiting on.
    on_poll(status, trials) sees every answered poll, the last one included (live_status.LiveStatus).
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    watch = TunerWatch(handle.id, handle.folder)
    failures = 0
    while True:
        try:
            check = rest(handle.port, "check-status", token=handle.token)
            trials = trial_jobs(handle)
            failures = 0
        except (urllib.error.URLError, OSError):  # refused, reset or timed out
            failures += 1
            if failures >= GONE_AFTER_FAILURES:  # not a busy moment: the manager process is gone
                raise manager_gone_error(handle) from None
            time.sleep(poll_seconds)
            continue
        status = check["status"]
        if on_poll is not None:
            on_poll(status, trials)
        all_ended = trials and all(trial["status"] in FINAL_TRIAL_STATES for trial in trials)
        if status in FINAL_EXPERIMENT_STATES - {"ERROR"}:
            return status
        if "NO_MORE_TRIAL" in status and all_ended:
            state = tuner_state(handle)
            if state is None or state.get("finished"):
                return status
        failure = failure_sentence(handle.id, handle.folder, status, check.get("errors") or [], watch.tuner_died())
        if failure is not None:
            raise ExperimentFailed(failure)
        if deadline is not None and time.monotonic() > deadline:
            raise LaunchError(f"experiment {handle.id} still {status} after {timeout:.0f} s; see {handle.url}.")
        time.sleep(poll_seconds)


def _final_metric(trial: dict) -> Any:
    finals = trial.get("finalMetricData") or []
    return decode_metric(finals[-1]["data"]) if finals else None


def _score(metric: Any) -> float | None:
    value = metric.get("default") if isinstance(metric, dict) else metric
    return float(value) if isinstance(value, (int, float)) else None


def experiment_summary(handle: ExperimentHandle, status: str | None = None) -> dict[str, Any]:
    """The search's result as JSON; each failed trial carries "error", its stderr's last error line."""
    from .trial_errors import trial_error

    trials = []
    for trial in trial_jobs(handle):
        trials.append(
            {
                "id": trial.get("trialJobId"),
                "status": trial.get("status"),
                "final": _final_metric(trial),
                "parameters": decode_metric((trial.get("hyperParameters") or [None])[-1]),
            }
        )
        if trials[-1]["status"] == "FAILED":
            trials[-1]["error"] = trial_error(handle.folder, str(trials[-1]["id"]))
    scored = [t for t in trials if t["status"] == "SUCCEEDED" and _score(t["final"]) is not None]
    best = max(scored, key=lambda t: _score(t["final"]))["final"] if scored else None
    state = tuner_state(handle)
    if state is not None:  # a multi-trial search: its result is the final job's, not the best-scoring child's
        best = state.get("summary")
    return {
        "experiment": handle.id,
        "status": status or experiment_status(handle),
        "dashboard": handle.url,
        "trials": trials,
        "best": best,
        "export_dir": best.get("export_dir") if isinstance(best, dict) else None,
    }

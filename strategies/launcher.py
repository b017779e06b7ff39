"""Launch an nnictl experiment with the dashboard on 127.0.0.1, wait for it, summarise it over NNI's REST API.

The manager is started the way `nnictl create --config` starts it (it *is* nnictl), with two additions to its
environment: NODE_OPTIONS preloads localhost_only.js so NNI's web server binds to one host, and PATH starts
with this interpreter's folder so a config's `python -m strategies.trial` runs in the same venv.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .experiment_config import ConfigError, load_experiment_config

PRELOAD = Path(__file__).with_name("localhost_only.js")
FINAL_TRIAL_STATES = {"SUCCEEDED", "FAILED", "USER_CANCELED", "SYS_CANCELED", "EARLY_STOPPED"}
FINAL_EXPERIMENT_STATES = {"DONE", "STOPPED", "ERROR"}


class LaunchError(RuntimeError):
    """The experiment could not be started or followed; one sentence naming the fix."""


@dataclass
class ExperimentHandle:
    id: str
    port: int
    bind_host: str
    config_path: Path

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.bind_host in ("127.0.0.1", "0.0.0.0", "") else self.bind_host
        return f"http://{host}:{self.port}"


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(preferred: int) -> int:
    if _port_is_free(preferred):
        return preferred
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def manager_environment(bind_host: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    if bind_host not in ("0.0.0.0", "::"):
        env["RESNAS_BIND_HOST"] = bind_host
        env["NODE_OPTIONS"] = f"{env.get('NODE_OPTIONS', '')} --require {PRELOAD}".strip()
    return env


def _nnictl() -> str:
    candidate = Path(sys.executable).with_name("nnictl")
    return str(candidate) if candidate.exists() else "nnictl"


def rest(port: int, route: str, timeout: float = 10.0) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/nni/{route}", timeout=timeout) as response:
        return json.loads(response.read().decode() or "null")


def _start_manager(command: list[str], bind_host: str) -> None:
    result = subprocess.run(command, env=manager_environment(bind_host), capture_output=True, text=True, timeout=180)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise LaunchError(f"nnictl {command[1]} failed ({tail[0]}); run it by hand to see the full log.")


def _await_manager(port: int) -> str:
    """The experiment ID, once the manager answers on its port."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return rest(port, "experiment")["id"]
        except (urllib.error.URLError, OSError, KeyError, TypeError):
            if time.monotonic() > deadline:
                raise LaunchError(f"the NNI manager did not answer on port {port}; see `nnictl log stderr`.") from None
            time.sleep(1)


def create_experiment(config_path: str | Path, port: int = 8080, bind_host: str = "127.0.0.1") -> ExperimentHandle:
    """Validate, then start the experiment; returns once the manager answers on its port."""
    config_path = Path(config_path)
    load_experiment_config(config_path)  # raises ConfigError before anything starts
    port = free_port(port)
    _start_manager([_nnictl(), "create", "--config", str(config_path), "--port", str(port)], bind_host)
    return ExperimentHandle(_await_manager(port), port, bind_host, config_path)


def resume_experiment(
    experiment_id: str, working_dir: str | Path | None = None, port: int = 8080, bind_host: str = "127.0.0.1"
) -> ExperimentHandle:
    """`nnictl resume` with the same 127.0.0.1 binding; resnas tuners continue from their state file.

    working_dir is the config's experimentWorkingDirectory (the folder holding ID/); by default nnictl looks
    the experiment up in its registry.
    """
    port = free_port(port)
    command = [_nnictl(), "resume", experiment_id, "--port", str(port)]
    if working_dir is not None:  # NNI 3.0 reads it as the folder that holds ID/, whatever its --help says
        command += ["--experiment_dir", str(Path(working_dir).expanduser())]
    _start_manager(command, bind_host)
    return ExperimentHandle(_await_manager(port), port, bind_host, Path(working_dir or ".") / experiment_id)


def trial_jobs(handle: ExperimentHandle) -> list[dict]:
    return rest(handle.port, "trial-jobs") or []


def experiment_status(handle: ExperimentHandle) -> str:
    return rest(handle.port, "check-status")["status"]


def experiment_dir(handle: ExperimentHandle) -> Path:
    """The experiment's folder (experimentWorkingDirectory/ID), where NNI keeps logs, trials and checkpoints."""
    params = (rest(handle.port, "experiment") or {}).get("params") or {}
    return Path(params.get("experimentWorkingDirectory") or "~/nni-experiments").expanduser() / handle.id


def tuner_state(handle: ExperimentHandle) -> dict[str, Any] | None:
    """A resnas multi-trial tuner's state file, or None for tuners without one (ProxylessTuner)."""
    from .multi_trial import STATE_FILE, load_state

    return load_state(experiment_dir(handle) / "checkpoint" / STATE_FILE)


def wait_for_experiment(handle: ExperimentHandle, poll_seconds: float = 3.0, timeout: float | None = None) -> str:
    """Block until the experiment is done (or has no more trials and none is running).

    A multi-trial tuner says "no more trials" whenever it waits for a step's trials, so between two steps
    every trial has ended for a moment; for those tuners the search is over only when their state says so.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        status = experiment_status(handle)
        trials = trial_jobs(handle)
        all_ended = trials and all(trial["status"] in FINAL_TRIAL_STATES for trial in trials)
        if status in FINAL_EXPERIMENT_STATES:
            return status
        if "NO_MORE_TRIAL" in status and all_ended:
            state = tuner_state(handle)
            if state is None or state.get("finished"):
                return status
        if deadline is not None and time.monotonic() > deadline:
            raise LaunchError(f"experiment {handle.id} still {status} after {timeout:.0f} s; see {handle.url}.")
        time.sleep(poll_seconds)


def decode_metric(data: Any) -> Any:
    """nni.report_final_result(dict) arrives JSON-encoded, sometimes twice."""
    for _ in range(3):
        if not isinstance(data, str):
            break
        try:
            data = json.loads(data)
        except json.JSONDecodeError:
            break
    return data


def _final_metric(trial: dict) -> Any:
    finals = trial.get("finalMetricData") or []
    return decode_metric(finals[-1]["data"]) if finals else None


def _score(metric: Any) -> float | None:
    value = metric.get("default") if isinstance(metric, dict) else metric
    return float(value) if isinstance(value, (int, float)) else None


def experiment_summary(handle: ExperimentHandle, status: str | None = None) -> dict[str, Any]:
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


def stop_experiment(handle: ExperimentHandle) -> None:
    subprocess.run([_nnictl(), "stop", handle.id], capture_output=True, text=True, timeout=120)


def listening_hosts(port: int) -> set[str]:
    """Local addresses with a TCP socket listening on `port`, read from /proc/net/tcp and tcp6."""
    hosts = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state = fields[1], fields[3]
            address, port_hex = local.split(":")
            if state != "0A" or int(port_hex, 16) != port:  # 0A = LISTEN
                continue
            if width == 8:
                hosts.add(socket.inet_ntop(socket.AF_INET, bytes.fromhex(address)[::-1]))
            else:
                raw = b"".join(bytes.fromhex(address[i : i + 8])[::-1] for i in range(0, 32, 8))
                hosts.add(socket.inet_ntop(socket.AF_INET6, raw))
    return hosts


__all__ = [
    "ConfigError",
    "ExperimentHandle",
    "LaunchError",
    "create_experiment",
    "resume_experiment",
    "experiment_summary",
    "listening_hosts",
    "stop_experiment",
    "wait_for_experiment",
]

"""Start, resume and stop an nnictl experiment with the dashboard on 127.0.0.1, behind a token.

The manager is started the way `nnictl create --config` starts it (it *is* nnictl), with additions to its
environment: NODE_OPTIONS preloads localhost_only.js so NNI's web server binds to one host, access_guard.js so
it answers only requests that name this host and carry the experiment's token (RESNAS_TOKEN, see
access_token.py), and all_gpus_schedulable.js so a trial may ask for all of the machine's GPUs (NNI 3.0 refuses
1 of 1); PATH starts with this interpreter's folder so a config's `python -m strategies.trial` runs in the same
venv.

`nnictl stop ID` still works behind the guard (it kills the manager's pid from nnictl's registry, no REST);
nnictl's commands that ask the REST API (`nnictl experiment status`, `trial ls`, `top`) are refused, which is
what `resnas status ID` is for.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
from pathlib import Path

from .access_token import TOKEN_ENV, load_token, new_token, resumed_token, save_token
from ..multi_trial.state import load_state, locate_state_file
from .config import check_resume_gpus, load_experiment_config
from .processes import end_processes, manager_pids, tuner_pids
from .rest import DEFAULT_WORKING_DIR, ExperimentHandle, LaunchError, rest

PRELOAD = Path(__file__).with_name("localhost_only.js")
ACCESS_GUARD = Path(__file__).with_name("access_guard.js")
GPU_PRELOAD = Path(__file__).with_name("all_gpus_schedulable.js")
# nnictl, with the token on the REST calls it makes while starting the manager (access_token.run_nnictl).
NNICTL_WITH_TOKEN = "import sys; from strategies.launch.access_token import run_nnictl; sys.exit(run_nnictl(sys.argv[1:]))"


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


def manager_environment(bind_host: str, token: str | None = None) -> dict[str, str]:
    """The manager's environment; without a token (--no-token) access_guard.js checks only the Host header."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["RESNAS_BIND_HOST"] = bind_host  # localhost_only.js binds to it, access_guard.js allows it as a Host
    env.pop(TOKEN_ENV, None)  # never one left in the user's shell
    if token:
        env[TOKEN_ENV] = token
    preloads = [GPU_PRELOAD, ACCESS_GUARD]
    if bind_host not in ("0.0.0.0", "::"):
        preloads.append(PRELOAD)
    requires = " ".join(f"--require {preload}" for preload in preloads)
    env["NODE_OPTIONS"] = f"{env.get('NODE_OPTIONS', '')} {requires}".strip()
    return env


def _nnictl() -> str:
    candidate = Path(sys.executable).with_name("nnictl")
    return str(candidate) if candidate.exists() else "nnictl"


def _start_manager(arguments: list[str], bind_host: str, token: str | None = None) -> None:
    """`nnictl ARGUMENTS` (create or resume) with the manager's environment."""
    command = [sys.executable, "-c", NNICTL_WITH_TOKEN, *arguments] if token else [_nnictl(), *arguments]
    result = subprocess.run(command, env=manager_environment(bind_host, token), capture_output=True, text=True,
                            timeout=180)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise LaunchError(f"nnictl {arguments[0]} failed ({tail[0]}); run it by hand to see the full log.")


def _await_manager(port: int, token: str | None = None) -> str:
    """The experiment ID, once the manager answers on its port."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return rest(port, "experiment", token=token)["id"]
        except urllib.error.HTTPError as error:
            if error.code != 403:
                raise
            raise LaunchError(f"the NNI manager on port {port} refused resnas's token (403); another manager may "
                              f"hold the port: `resnas stop` it, or pass another --port.") from None
        except (urllib.error.URLError, OSError, KeyError, TypeError):
            if time.monotonic() > deadline:
                raise LaunchError(f"the NNI manager did not answer on port {port}; see `nnictl log stderr`.") from None
            time.sleep(1)


def _keep_token(handle: ExperimentHandle) -> None:
    """Store the handle's token in its folder; a manager whose token could not be kept is stopped again."""
    if handle.token is None or load_token(handle.folder) == handle.token:
        return
    try:
        save_token(handle.folder, handle.token)
    except OSError as error:
        stop_experiment(handle)
        raise LaunchError(f"could not store the dashboard token in {handle.folder} ({error}); free disk space or "
                          f"fix the folder's permissions and run it again.") from None


def create_experiment(config_path: str | Path, port: int = 8080, bind_host: str = "127.0.0.1",
                      use_token: bool = True) -> ExperimentHandle:
    """Validate, then start the experiment; returns once the manager answers on its port.

    With use_token the dashboard and REST API need the handle's token (handle.dashboard_url carries it).
    """
    config_path = Path(config_path)
    config = load_experiment_config(config_path, check_gpus=True)  # raises ConfigError before anything starts
    port = free_port(port)
    token = new_token() if use_token else None
    _start_manager(["create", "--config", str(config_path), "--port", str(port)], bind_host, token)
    working_dir = Path(config["experimentWorkingDirectory"])  # NNI's canonical config: absolute, default filled in
    handle = ExperimentHandle(_await_manager(port, token), port, bind_host, config_path, working_dir, token)
    _keep_token(handle)  # only now: NNI names the experiment's folder
    return handle


def resume_experiment(
    experiment_id: str, working_dir: str | Path | None = None, port: int = 8080, bind_host: str = "127.0.0.1",
    use_token: bool = True,
) -> ExperimentHandle:
    """`nnictl resume` with the same 127.0.0.1 binding; resnas tuners continue from their state file.

    working_dir is the config's experimentWorkingDirectory (the folder holding ID/); by default nnictl looks
    the experiment up in its registry. The stored token is used again, so a browser's cookie still works.
    """
    command = ["resume", experiment_id]
    if working_dir is not None:  # NNI 3.0 reads it as the folder that holds ID/, whatever its --help says
        working_dir = Path(working_dir).expanduser()
        command += ["--experiment_dir", str(working_dir)]
    else:
        working_dir = registered_working_dir(experiment_id)
    check_resume_gpus(experiment_id, working_dir / experiment_id)  # raises GpuRequestError before anything starts
    _prepare_resume(experiment_id, working_dir / experiment_id)
    port = free_port(port)
    token = resumed_token(working_dir / experiment_id) if use_token else None
    _start_manager(command + ["--port", str(port)], bind_host, token)
    handle = ExperimentHandle(_await_manager(port, token), port, bind_host, working_dir / experiment_id, working_dir,
                              token)
    _keep_token(handle)
    return handle


def _prepare_resume(experiment_id: str, folder: Path) -> None:
    """Before a resume starts a manager: refuse a running experiment and a corrupt state file (one sentence each,
    nothing touched), then end the tuner a killed manager left behind, which would steal the new manager's tuner
    channel on the same port. Its orphaned trials may go on: a re-issued job waits for them (job_files.job_lock)."""
    running = manager_pids(experiment_id)
    if running:
        raise LaunchError(f"experiment {experiment_id} is still running (its NNI manager is pid {running[0]}); follow "
                          f"it with `resnas status {experiment_id}` or end it with `resnas stop {experiment_id}` first.")
    load_state(locate_state_file(folder / "checkpoint"))  # raises StateError for a file the tuner could not read
    end_processes(tuner_pids(folder))


def _registry_entry(experiment_id: str) -> dict | None:
    """nnictl's record of an experiment in its registry (~/nni-experiments/.experiment): port, logDir, pid, ..."""
    try:
        entry = json.loads((DEFAULT_WORKING_DIR.expanduser() / ".experiment").read_text())[experiment_id]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return entry if isinstance(entry, dict) else None


def registered_working_dir(experiment_id: str) -> Path:
    """Where nnictl's registry (~/nni-experiments/.experiment) says the experiment lives; NNI's default if not."""
    try:
        return Path(_registry_entry(experiment_id)["logDir"]).expanduser()
    except (KeyError, TypeError):
        return DEFAULT_WORKING_DIR.expanduser()


def registered_experiment(experiment_id: str) -> ExperimentHandle:
    """A handle on an experiment that nnictl's registry knows: its last port, folder and stored token."""
    entry = _registry_entry(experiment_id)
    if entry is None or not isinstance(entry.get("port"), int):
        raise LaunchError(f"experiment {experiment_id} is not in nnictl's registry "
                          f"({DEFAULT_WORKING_DIR / '.experiment'}); check the ID with `nnictl experiment list`.")
    working_dir = registered_working_dir(experiment_id)
    folder = working_dir / experiment_id
    return ExperimentHandle(experiment_id, entry["port"], "127.0.0.1", folder, working_dir, load_token(folder))


def stop_experiment(handle: ExperimentHandle) -> None:
    """`nnictl stop ID`: it signals the manager's pid from nnictl's registry and needs no REST call, so the
    access guard does not stand in its way; returns once the manager has exited (nnictl waits for it)."""
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

"""Start, resume and stop an nnictl experiment with the dashboard on 127.0.0.1.

The manager is started the way `nnictl create --config` starts it (it *is* nnictl), with additions to its
environment: NODE_OPTIONS preloads localhost_only.js so NNI's web server binds to one host, and
all_gpus_schedulable.js so a trial may ask for all of the machine's GPUs (NNI 3.0 refuses 1 of 1); PATH starts
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
from pathlib import Path

from .config import check_resume_gpus, load_experiment_config
from .rest import DEFAULT_WORKING_DIR, ExperimentHandle, LaunchError, rest

PRELOAD = Path(__file__).with_name("localhost_only.js")
GPU_PRELOAD = Path(__file__).with_name("all_gpus_schedulable.js")


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
    preloads = [GPU_PRELOAD]
    if bind_host not in ("0.0.0.0", "::"):
        env["RESNAS_BIND_HOST"] = bind_host
        preloads.append(PRELOAD)
    requires = " ".join(f"--require {preload}" for preload in preloads)
    env["NODE_OPTIONS"] = f"{env.get('NODE_OPTIONS', '')} {requires}".strip()
    return env


def _nnictl() -> str:
    candidate = Path(sys.executable).with_name("nnictl")
    return str(candidate) if candidate.exists() else "nnictl"


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
    config = load_experiment_config(config_path, check_gpus=True)  # raises ConfigError before anything starts
    port = free_port(port)
    _start_manager([_nnictl(), "create", "--config", str(config_path), "--port", str(port)], bind_host)
    working_dir = Path(config["experimentWorkingDirectory"])  # NNI's canonical config: absolute, default filled in
    return ExperimentHandle(_await_manager(port), port, bind_host, config_path, working_dir)


def resume_experiment(
    experiment_id: str, working_dir: str | Path | None = None, port: int = 8080, bind_host: str = "127.0.0.1"
) -> ExperimentHandle:
    """`nnictl resume` with the same 127.0.0.1 binding; resnas tuners continue from their state file.

    working_dir is the config's experimentWorkingDirectory (the folder holding ID/); by default nnictl looks
    the experiment up in its registry.
    """
    command = [_nnictl(), "resume", experiment_id]
    if working_dir is not None:  # NNI 3.0 reads it as the folder that holds ID/, whatever its --help says
        working_dir = Path(working_dir).expanduser()
        command += ["--experiment_dir", str(working_dir)]
    else:
        working_dir = registered_working_dir(experiment_id)
    check_resume_gpus(experiment_id, working_dir / experiment_id)  # raises GpuRequestError before anything starts
    port = free_port(port)
    _start_manager(command + ["--port", str(port)], bind_host)
    return ExperimentHandle(_await_manager(port), port, bind_host, working_dir / experiment_id, working_dir)


def registered_working_dir(experiment_id: str) -> Path:
    """Where nnictl's registry (~/nni-experiments/.experiment) says the experiment lives; NNI's default if not."""
    try:
        registry = json.loads((DEFAULT_WORKING_DIR.expanduser() / ".experiment").read_text())
        return Path(registry[experiment_id]["logDir"]).expanduser()
    except (OSError, ValueError, KeyError, TypeError):
        return DEFAULT_WORKING_DIR.expanduser()


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

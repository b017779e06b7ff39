"""NNI's remote training service end to end: a real OpenSSH server on 127.0.0.1, registered as two remote
machines (two ports), runs the quick NASH search that `resnas create --wait` starts; trials read their parents
from the shared artifact_dir and the export loads in timm. And the shipped remote example validates anywhere.

The server is this test's own: throwaway host and user keys, its own config and free ports, started with `-f`
and ended by its pid; traffic stays on loopback. `make test` installs openssh-server when it is missing
(Makefile: ssh-server).
"""

import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest
import yaml

from conftest import worker_port
from strategies.cli import main
from strategies.launch.config import DataFilesError, load_experiment_config
from strategies.multi_trial.state import STATE_FILE, STATE_POINTER
from test_multi_trial_e2e import TINY_DATA, json_line, resnas

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "nni_configs" / "examples" / "remote_hill_climbing.yml"


def test_the_remote_example_validates_for_another_machine_and_names_what_this_one_lacks(capsys):
    # tests/test_cli.py checks nni_configs/*.yml; the examples are meant for other machines and are checked here.
    assert main(["validate", "--no-gpu-check", "--no-data-check", str(EXAMPLE)]) == 0
    config = load_experiment_config(EXAMPLE)  # the canonical config keeps the key's own path, not a stand-in
    machines = config["trainingService"]["machineList"]
    assert [machine["sshKeyFile"] for machine in machines] == [str(Path("~/.ssh/id_ed25519").expanduser())] * 2
    with pytest.raises(DataFilesError, match="is not a file on this machine|is not a folder on this machine"):
        load_experiment_config(EXAMPLE, check_data=True)


# ---- a real sshd on 127.0.0.1 ------------------------------------------------------------------------------------
def _sshd() -> str | None:
    return shutil.which("sshd") or next((path for path in ("/usr/sbin/sshd",) if os.access(path, os.X_OK)), None)


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for probe in sockets:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in sockets]
    finally:
        for probe in sockets:
            probe.close()


def _listening(port: int) -> bool:
    with closing(socket.socket()) as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def ssh_server(tmp_path):
    """{ports, key, log}: one sshd listening on two loopback ports, which the config registers as two machines."""
    if os.geteuid() != 0:
        pytest.skip("the test sshd runs as root to log in as this user; run the tests as root (CI does)")
    if _sshd() is None:  # the Makefile's recipe, so that one place installs it
        subprocess.run(["make", "-s", "-C", str(REPO), "ssh-server"], capture_output=True, timeout=300)
    sshd = _sshd()
    if sshd is None:
        pytest.skip("no OpenSSH server: `make ssh-server` (as root) installs it from the system's package manager")
    folder = tmp_path / "sshd"
    folder.mkdir()
    for name in ("host_key", "user_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / name)], check=True)
    shutil.copy(folder / "user_key.pub", folder / "authorized_keys")
    ports = _free_ports(2)
    (folder / "sshd_config").write_text("\n".join([
        *(f"ListenAddress 127.0.0.1:{port}" for port in ports),
        f"HostKey {folder / 'host_key'}",
        f"AuthorizedKeysFile {folder / 'authorized_keys'}",
        f"PidFile {folder / 'sshd.pid'}",
        "PermitRootLogin prohibit-password", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
        "UsePAM no",
        "StrictModes no",  # the keys live under /tmp, which is world-writable
        "Subsystem sftp internal-sftp",  # NNI uploads the code and its trial keeper's config over SFTP
        # NNI runs `python -m pip install nni --upgrade` on every worker at start: answered from what is installed.
        "SetEnv PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1",
        "LogLevel VERBOSE", "",
    ]))
    Path("/run/sshd").mkdir(exist_ok=True)  # its privilege separation folder, which only a service start makes
    server = subprocess.Popen([sshd, "-D", "-f", str(folder / "sshd_config"), "-E", str(folder / "sshd.log")])
    deadline = time.monotonic() + 20
    while not all(_listening(port) for port in ports):
        assert server.poll() is None, (folder / "sshd.log").read_text()[-2000:]
        assert time.monotonic() < deadline, "sshd did not listen within 20 s"
        time.sleep(0.1)
    try:
        yield {"ports": ports, "key": folder / "user_key", "log": folder / "sshd.log"}
    finally:
        server.terminate()
        server.wait(timeout=10)


def remote_config(tmp_path: Path, ports: list[int], key: Path, platform: str = "remote") -> Path:
    """The quick NASH search (shortened as in test_multi_trial_e2e) on the given machines, or locally."""
    config = yaml.safe_load((REPO / "nni_configs" / "hill_climbing_quick.yml").read_text())
    config["trialCodeDirectory"] = config["tuner"]["codeDirectory"] = str(REPO)  # uploaded without .venv: .nniignore
    config["experimentWorkingDirectory"] = str(tmp_path / "nni-experiments")
    (tmp_path / "artifacts").mkdir(exist_ok=True)
    config["tuner"]["classArgs"].update(TINY_DATA, artifact_dir=str(tmp_path / "artifacts"), start_widths=[4, 8, 8],
                                        pretrain_epochs=1, n_steps=1, n_neighbours=2, n_morphisms=1,
                                        epochs_neighbour=1, epochs_final=1)
    if platform == "remote":
        # The trial's python by its path: NNI starts trials through bash, which over SSH reads ~/.bashrc, and a
        # pyenv or conda line there puts another python first on PATH. pythonPath (the venv's bin folder, put
        # first on PATH for NNI's own commands) is not enough on its own.
        config["trialCommand"] = f"OMP_NUM_THREADS=1 {sys.executable} -m strategies.trial"
        python = str(Path(sys.executable).parent)
        config["trainingService"] = {"platform": "remote", "machineList": [
            {"host": "127.0.0.1", "port": port, "user": "root", "sshKeyFile": str(key), "pythonPath": python}
            for port in ports]}
    path = tmp_path / f"hill_climbing_{platform}.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def loads_in_timm(export_dir: str) -> list[int]:
    """test_multi_trial_e2e's check, in this process: a subprocess would import torch and timm again (seconds)."""
    import timm
    import torch

    from search_spaces import timm_entry

    assert timm.is_model(timm_entry.ENTRY_POINT)  # importing it registered the net timm builds exports with
    model = timm.create_model(f"local-dir:{export_dir}", pretrained=True).eval()
    return list(model(torch.zeros(1, 1, 12, 12)).shape)


def _trial_log_paths(experiment_dir: Path) -> dict[str, str]:
    """Where NNI's trial records say each trial ran (its logPath: HOST:folder on the machine that ran it)."""
    with closing(sqlite3.connect(experiment_dir / "db" / "nni.sqlite")) as db:
        rows = db.execute("SELECT trialJobId, logPath FROM TrialJobEvent WHERE logPath IS NOT NULL").fetchall()
    return dict(rows)


def _end_trial_keepers(worker_dir: Path) -> None:
    """NNI stops its trial keepers on stop; one left by a failed run is ended by the pid it wrote (ours)."""
    for pid_file in worker_dir.glob("environments/*/trial_keeper*/trial_keeper.pid"):
        try:
            os.killpg(int(pid_file.read_text()), signal.SIGTERM)
        except (ProcessLookupError, PermissionError, ValueError):
            pass


@pytest.mark.e2e
def test_hill_climbing_runs_on_two_ssh_machines_sharing_the_artifact_dir(tmp_path, ssh_server):
    config = remote_config(tmp_path, ssh_server["ports"], ssh_server["key"])
    started = time.monotonic()
    port = str(worker_port(8799))
    result = resnas("create", "--config", str(config), "--port", port, "--wait", "--timeout", "240", timeout=300)
    wall = time.monotonic() - started
    experiment = re.search(r"^experiment (\w+) started", result.stdout, re.MULTILINE)
    assert experiment, result.stdout[-3000:] + result.stderr[-3000:]
    experiment = experiment.group(1)
    worker_dir = Path.home() / "nni-experiments" / experiment  # the workers' side: this user's home, over SSH
    try:
        line = json_line(result)
        assert line["status"] == "TUNER_NO_MORE_TRIAL", line
        assert len(line["trials"]) == 4 and all(trial["status"] == "SUCCEEDED" for trial in line["trials"])

        # The trials ran through sshd on both machines, each in its worker's own folder.
        log = ssh_server["log"].read_text()
        assert all(f"on 127.0.0.1 port {port}" in log for port in ssh_server["ports"]), log[-2000:]
        experiment_dir = tmp_path / "nni-experiments" / experiment
        ran_on = _trial_log_paths(experiment_dir)
        assert set(ran_on) == {trial["id"] for trial in line["trials"]}
        assert all(path.startswith(f"127.0.0.1:~/nni-experiments/{experiment}/environments/remote-worker")
                   for path in ran_on.values()), ran_on
        assert {path.split("/environments/")[1].split("/")[0] for path in ran_on.values()} == \
            {"remote-worker1", "remote-worker2"}

        # The search lives in artifact_dir/ID; the checkpoint folder only points there.
        artifacts = tmp_path / "artifacts" / experiment
        state = json.loads((artifacts / STATE_FILE).read_text())
        checkpoint = experiment_dir / "checkpoint"
        assert (checkpoint / STATE_POINTER).read_text() == str(artifacts / STATE_FILE)
        assert not (checkpoint / STATE_FILE).exists() and not (checkpoint / "hill_climbing").exists()
        assert state["finished"] and state["error"] is None
        child = state["jobs"]["step1/child0"]["params"]
        assert child["artifact_dir"] == str(tmp_path / "artifacts")
        assert child["parent"] == str(artifacts / "hill_climbing" / "start" / "model.ckpt")
        assert (artifacts / "hill_climbing" / "step1" / "child0" / "result.json").is_file()
        assert line["export_dir"] == str(artifacts / "hill_climbing" / "final" / "timm_export")
        assert loads_in_timm(line["export_dir"]) == [1, 10]
        assert (artifacts / "hill_climbing" / "lineage.png").is_file()  # `resnas plot` finds it: test_artifact_dir
        print(f"remote search: {wall:.1f} s")
    finally:
        _end_trial_keepers(worker_dir)
        shutil.rmtree(worker_dir, ignore_errors=True)

"""NASH, ResBuilder and stage-wise depth through the real NNI manager on 127.0.0.1: `resnas create --wait`, a kill and
`resnas resume`, the plots and the timm exports."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import worker_port
from strategies.launch import (listening_hosts, registered_experiment, resume_experiment, stop_experiment,
                               wait_for_experiment)
from strategies.multi_trial.state import STATE_FILE

REPO = Path(__file__).resolve().parents[1]
TINY_DATA = {"image_size": 12, "limit_train_batches": 4, "batch_size": 64, "num_workers": 0}


def shortened(tmp_path: Path, name: str, class_name: str | None = None, **changes) -> Path:
    config = yaml.safe_load((REPO / "nni_configs" / name).read_text())
    config["trialCodeDirectory"] = config["tuner"]["codeDirectory"] = str(REPO)
    config["tuner"]["className"] = class_name or config["tuner"]["className"]
    config["experimentWorkingDirectory"] = str(tmp_path / "nni-experiments")
    config["tuner"]["classArgs"].update(TINY_DATA, **changes)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    return path


def resnas(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "strategies.cli", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=timeout)


def json_line(result: subprocess.CompletedProcess) -> dict:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def loads_in_timm(export_dir: str, channels: int = 1, size: int = 12) -> list[int]:
    code = (f"import search_spaces.timm_entry, timm, torch, json; m = timm.create_model('local-dir:{export_dir}', "
            f"pretrained=True).eval(); print(json.dumps(list(m(torch.zeros(1, {channels}, {size}, {size})).shape)))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    return json.loads(loaded.stdout.strip().splitlines()[-1])


@pytest.mark.e2e
def test_layer_pruning_quick_runs_on_the_real_manager_within_the_budget(tmp_path):
    config = shortened(tmp_path, "layer_pruning_quick.yml", n_insertions=1, n_morphnet=1, epochs=1, variant_epochs=1,
                       zeta=1.5e5)
    port = str(worker_port(8791))
    line = json_line(resnas("create", "--config", str(config), "--port", port, "--wait", "--timeout", "800"))
    best = line["best"]
    assert line["status"] == "TUNER_NO_MORE_TRIAL" and line["dashboard"].startswith("http://127.0.0.1:")
    assert len(line["trials"]) == 3 * 3 + 1 and all(t["status"] == "SUCCEEDED" for t in line["trials"])
    assert best["flops"] <= best["zeta"] == 1.5e5 and best["variant"] in ("no_reg_ri", "no_reg_wi")
    assert loads_in_timm(line["export_dir"]) == [1, 10]
    work = tmp_path / "nni-experiments" / line["experiment"] / "checkpoint"
    state = json.loads((work / STATE_FILE).read_text())
    morphnet_step = state["jobs"]["step2/with_reg"]["result"]
    assert morphnet_step["edit"] == "morphnet" and morphnet_step["flops"] <= 1.5e5
    assert (work / "layer_pruning" / "fig5.png").is_file()
    plotted = resnas("plot", line["experiment"], "--dir", str(tmp_path / "nni-experiments"),
                     "--out", str(tmp_path / "again.png"))
    assert plotted.returncode == 0 and (tmp_path / "again.png").is_file()


def _state(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def create_kept(config: Path, port: int) -> str:
    """`resnas create --keep` (returns once the experiment runs); the experiment's id."""
    created = subprocess.Popen([sys.executable, "-m", "strategies.cli", "create", "--config", str(config),
                                "--port", str(port), "--keep"], cwd=REPO, stdout=subprocess.PIPE, text=True)
    first_line = created.stdout.readline()
    created.wait(timeout=300)
    return first_line.split()[1]


def kill_manager_once(experiment_id: str, state_path: Path, ready, timeout: float = 600) -> int:
    """SIGKILL the manager (no goodbye) once ready(jobs) holds; returns the port it listened on."""
    deadline = time.monotonic() + timeout
    while not ready(_state(state_path).get("jobs", {})):
        if time.monotonic() > deadline:  # stopped, not left running beside the tests after this one
            stop_experiment(registered_experiment(experiment_id))
            pytest.fail("the search did not get far enough in time")
        time.sleep(1)
    registry = json.loads((Path.home() / "nni-experiments" / ".experiment").read_text())
    os.kill(registry[experiment_id]["pid"], signal.SIGKILL)
    port = registry[experiment_id]["port"]
    while listening_hosts(port):
        time.sleep(0.5)
    return port


def checkpoint_times(state_path: Path, method: str) -> dict[str, int]:
    """The model.ckpt modification time of every finished job that wrote one."""
    work = state_path.parent / method
    return {key: (work / key / "model.ckpt").stat().st_mtime_ns for key, job in _state(state_path)["jobs"].items()
            if job["status"] == "done" and (work / key / "model.ckpt").is_file()}


def resume_to_the_end(experiment_id: str, tmp_path: Path, port: int) -> dict:
    """`resnas resume` on `port`, bound to 127.0.0.1, until the search ends; the final state file."""
    handle = resume_experiment(experiment_id, tmp_path / "nni-experiments", port=port)
    try:
        assert handle.port == port and listening_hosts(handle.port) == {"127.0.0.1"}
        wait_for_experiment(handle, poll_seconds=2, timeout=900)
    finally:
        stop_experiment(handle)
    return _state(tmp_path / "nni-experiments" / experiment_id / "checkpoint" / STATE_FILE)


@pytest.mark.e2e
def test_hill_climbing_survives_a_killed_manager_and_retrains_no_finished_child(tmp_path):
    # Created under the tuner's pre-package class path: NNI's dispatcher must find it on create and on resume.
    config = shortened(tmp_path, "hill_climbing_quick.yml", class_name="strategies.hill_climbing_tuner.HillClimbingTuner",
                       start_widths=[4, 8, 8], pretrain_epochs=1, n_steps=2, n_neighbours=3, n_morphisms=2,
                       epochs_neighbour=2, epochs_final=1)
    experiment_id = create_kept(config, worker_port(8795))
    experiment_dir = tmp_path / "nni-experiments" / experiment_id
    state_path = experiment_dir / "checkpoint" / STATE_FILE
    port = kill_manager_once(experiment_id, state_path, lambda jobs: any(
        key.startswith("step1/") and job["status"] == "done" for key, job in jobs.items()))
    finished_before = checkpoint_times(state_path, "hill_climbing")

    # On the same port (users resume on the one they used): resume first ends the tuner the kill left behind,
    # which would take the new manager's tuner channel; children orphaned by the kill finish, and count.
    state = resume_to_the_end(experiment_id, tmp_path, port)
    assert state["finished"] and state["error"] is None and state["summary"]["export_dir"]
    after = checkpoint_times(state_path, "hill_climbing")
    assert {key: after[key] for key in finished_before} == finished_before
    assert [entry["step"] for entry in state["lineage"]] == [0, 1, 2]
    summary = state["summary"]
    # The climbed net (1 + 2 + 2 + 1 short epochs) beats the start net (1 short epoch) on the same split.
    assert summary["val_accuracy"] > summary["start_val_accuracy"] and summary["start_default"] is not None
    assert loads_in_timm(summary["export_dir"]) == [1, 10]
    assert (experiment_dir / "checkpoint" / "hill_climbing" / "lineage.png").is_file()


def quick_config(tmp_path: Path, name: str, **changes) -> Path:
    """A quick config as shipped (its data and lengths), run from this checkout into tmp_path."""
    config = yaml.safe_load((REPO / "nni_configs" / name).read_text())
    config["trialCodeDirectory"] = config["tuner"]["codeDirectory"] = str(REPO)
    config["experimentWorkingDirectory"] = str(tmp_path / "nni-experiments")
    config["tuner"]["classArgs"].update(changes)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.e2e
def test_stagewise_quick_grows_a_stage_on_the_real_manager(tmp_path):
    config = quick_config(tmp_path, "stagewise_quick.yml")
    port = str(worker_port(8797))
    line = json_line(resnas("create", "--config", str(config), "--port", port, "--wait", "--timeout", "800"))
    best = line["best"]
    assert line["status"] == "TUNER_NO_MORE_TRIAL" and line["dashboard"].startswith("http://127.0.0.1:")
    assert all(t["status"] == "SUCCEEDED" for t in line["trials"])
    start, final = best["start_depths"], best["depths"]
    assert start == [1, 1, 1] and final != start and all(f >= s for f, s in zip(final, start))
    assert 0 < best["start_default"] <= 1 and best["default"] == best["test_accuracy"] > 0.8
    rows = best["iterations"]
    assert rows[0]["depths"] == start and any(any(row.get("grown") or []) for row in rows[1:])
    assert loads_in_timm(line["export_dir"], size=16) == [1, 10]
    work = tmp_path / "nni-experiments" / line["experiment"] / "checkpoint"
    assert (work / "stagewise" / "stagewise.png").is_file()
    plotted = resnas("plot", line["experiment"], "--dir", str(tmp_path / "nni-experiments"),
                     "--out", str(tmp_path / "again.png"))
    assert plotted.returncode == 0 and (tmp_path / "again.png").is_file()

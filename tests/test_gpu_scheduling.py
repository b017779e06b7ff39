"""GPU scheduling on the real NNI manager without a GPU: a stand-in pynvml (tests/fixtures/fake_nvml) on the
manager's PYTHONPATH reports RESNAS_FAKE_GPUS idle GPUs, so NNI schedules trials as if they were there.

Also the check before launch: a local experiment asking for more GPUs than NNI sees is refused in one sentence.
"""

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import worker_port
from strategies.launch import ConfigError, create_experiment, experiment_summary, stop_experiment, wait_for_experiment
from strategies.launch import load_experiment_config
from strategies.launch.config import GpuRequestError, check_resume_gpus
from strategies.cli import main
from strategies.launch import nnictl

REPO = Path(__file__).resolve().parents[1]
FAKE_NVML = REPO / "tests" / "fixtures" / "fake_nvml"
FIXTURE = REPO / "tests" / "fixtures" / "gpu_trial"


@pytest.fixture
def fake_gpus(monkeypatch):
    """fake_gpus(n): from now on NNI (and the check before launch) sees n idle GPUs."""

    def use(count: int) -> None:
        monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(FAKE_NVML), os.environ.get("PYTHONPATH", "")]))
        monkeypatch.setenv("RESNAS_FAKE_GPUS", str(count))

    return use


def gpu_experiment(tmp_path: Path, **changes) -> Path:
    folder = tmp_path / "experiment"
    shutil.copytree(FIXTURE, folder, dirs_exist_ok=True)
    config = yaml.safe_load((folder / "experiment.yml").read_text())
    config["experimentWorkingDirectory"] = str(tmp_path / "nni-experiments")
    config.update(changes)
    (folder / "experiment.yml").write_text(yaml.safe_dump(config))
    return folder / "experiment.yml"


def run_to_the_end(path: Path, timeout: float) -> dict:
    handle = create_experiment(path, port=worker_port(8790))
    try:
        status = wait_for_experiment(handle, poll_seconds=1, timeout=timeout)
        return experiment_summary(handle, status)
    finally:
        stop_experiment(handle)


# --- the check before launch --------------------------------------------------------------------------------


def test_a_gpu_trial_on_a_machine_without_gpus_is_refused_in_one_sentence(tmp_path, fake_gpus):
    fake_gpus(0)
    with pytest.raises(ConfigError) as refused:
        load_experiment_config(gpu_experiment(tmp_path), check_gpus=True)
    message = str(refused.value)
    assert "trialGpuNumber: 1 but this machine shows no GPU to NNI" in message
    assert message.endswith("set trialGpuNumber: 0 to train on the CPU, or run where enough GPUs are.")
    assert "\n" not in message and message.count(". ") == 0


def test_one_gpu_for_a_one_gpu_trial_is_enough(tmp_path, fake_gpus):
    fake_gpus(1)
    assert load_experiment_config(gpu_experiment(tmp_path), check_gpus=True)["trialGpuNumber"] == 1
    fake_gpus(0)  # a CPU trial needs no GPU, and the collector is not even asked
    assert load_experiment_config(gpu_experiment(tmp_path, trialGpuNumber=0), check_gpus=True)


def test_gpu_indices_count_and_the_check_is_off_unless_asked(tmp_path, fake_gpus):
    fake_gpus(2)
    service = {"platform": "local", "useActiveGpu": False, "gpuIndices": [1]}
    load_experiment_config(gpu_experiment(tmp_path, trainingService=service), check_gpus=True)
    with pytest.raises(ConfigError, match=r"gpuIndices \[1\] leave 1 of the 2 GPU\(s\)"):
        load_experiment_config(gpu_experiment(tmp_path, trainingService=service, trialGpuNumber=2), check_gpus=True)
    fake_gpus(0)
    load_experiment_config(gpu_experiment(tmp_path))  # the default: the config itself, whatever this machine has


def test_validate_exits_2_without_the_gpus_and_checks_for_another_machine_with_no_gpu_check(tmp_path, fake_gpus,
                                                                                           capsys):
    fake_gpus(0)
    path = gpu_experiment(tmp_path)
    refused = subprocess.run([sys.executable, "-m", "strategies.cli", "validate", str(path)], cwd=REPO,
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2
    assert "shows no GPU to NNI" in refused.stderr and "--no-gpu-check" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert main(["validate", "--no-gpu-check", str(path)]) == 0
    assert "ok (GPUs not checked)" in capsys.readouterr().out


def stored_experiment(tmp_path: Path, experiment_id: str, trial_gpus: int) -> Path:
    """An experiment folder as NNI leaves it: its config in db/nni.sqlite (ExperimentProfile, newest revision)."""
    (tmp_path / experiment_id / "db").mkdir(parents=True)
    with sqlite3.connect(tmp_path / experiment_id / "db" / "nni.sqlite") as connection:
        connection.execute("CREATE TABLE ExperimentProfile (params text, id text, execDuration integer, startTime "
                           "integer, endTime integer, logDir text, nextSequenceId integer, revision integer)")
        for revision, gpus in enumerate((0, trial_gpus)):
            params = {"trialGpuNumber": gpus, "trainingService": {"platform": "local", "trialGpuNumber": gpus}}
            connection.execute("INSERT INTO ExperimentProfile (params, id, revision) VALUES (?, ?, ?)",
                               (json.dumps(params), experiment_id, revision))
    return tmp_path


def test_resuming_a_gpu_experiment_without_the_gpus_is_refused_before_the_manager_starts(tmp_path, fake_gpus,
                                                                                        monkeypatch):
    started = []
    monkeypatch.setattr(nnictl, "_start_manager", lambda *args: started.append(args))
    fake_gpus(0)
    with pytest.raises(GpuRequestError, match=r"experiment abc: trialGpuNumber: 1 but this machine shows no GPU to "
                                              r"NNI .*; resume it where enough GPUs are"):
        nnictl.resume_experiment("abc", stored_experiment(tmp_path, "abc", trial_gpus=1))
    assert started == []
    fake_gpus(1)
    check_resume_gpus("abc", tmp_path / "abc")  # enough now: no refusal
    check_resume_gpus("unknown", tmp_path / "unknown")  # no stored config: nnictl will say so itself


# --- the preload, on NNI's own scheduler module -------------------------------------------------------------

SCHEDULER_SCRIPT = """
require('common/globals/unittest').resetGlobals();
const { TaskScheduler, UnitTestHelpers } = require('common/trial_keeper/task_scheduler/scheduler.js');
UnitTestHelpers.mockGpuInfo({ success: true, gpuNumber: 1, gpus: [{ index: 0 }], processes: [] });
const scheduler = new TaskScheduler();
(async () => {
  await scheduler.init();
  const answers = [];
  for (const [trial, gpus, restrictions] of [['a', 1, {}], ['b', 1, {}], ['c', 2, {}]]) {
    const start = Date.now();
    answers.push({ trial, env: await scheduler.schedule('exp', trial, gpus, restrictions), ms: Date.now() - start });
  }
  await scheduler.release('exp', 'a');
  answers.push({ trial: 'd', env: await scheduler.schedule('exp', 'd', 1, { onlyUseIndices: [3] }) });
  answers.push({ trial: 'e', env: await scheduler.schedule('exp', 'e', 1, {}) });
  console.log('ANSWERS ' + JSON.stringify(answers));
  process.exit(0);
})();
"""


def run_under_the_preload(tmp_path: Path, source: str, marker: str):
    """Run a script on NNI's own Node modules with the preload, as the manager runs; the JSON it printed after
    `marker`."""
    import nni_node

    home = Path(nni_node.__file__).parent
    script = tmp_path / "script.js"
    script.write_text(source)
    result = subprocess.run([str(home / "node"), "--require", str(nnictl.GPU_PRELOAD), str(script)], cwd=home,
                            env={**os.environ, "NODE_PATH": str(home)}, capture_output=True, text=True, timeout=60)
    line = next(line for line in result.stdout.splitlines() if line.startswith(marker + " "))
    return json.loads(line.removeprefix(marker + " "))


def test_the_preload_lets_a_trial_take_all_gpus_and_makes_refusals_wait(tmp_path):
    answers = {answer["trial"]: answer for answer in run_under_the_preload(tmp_path, SCHEDULER_SCRIPT, "ANSWERS")}
    assert answers["a"]["env"] == {"CUDA_VISIBLE_DEVICES": "0"}  # 1 of 1 GPU: NNI 3.0 alone says null
    assert answers["b"]["env"] is None and answers["b"]["ms"] >= 900  # busy: refused after a second, not at once
    assert answers["c"]["env"] is None  # more GPUs than the machine has: still impossible
    assert answers["d"]["env"] is None  # gpuIndices still hold
    assert answers["e"]["env"] == {"CUDA_VISIBLE_DEVICES": "0"}  # released, so free again


COLLECTOR_SCRIPT = """
require('common/globals/unittest').resetGlobals();
const pythonScript = require('common/pythonScript');
let runs = 0;
pythonScript.runPythonModule = async (module, args) => {
  runs += 1;
  await new Promise(resolve => setTimeout(resolve, 300));  // a collector taking its time on a busy machine
  return JSON.stringify({ success: true, gpuNumber: 2, gpus: [], processes: [], forced: Boolean(args) });
};
const { collectGpuInfo } = require('common/trial_keeper/task_scheduler/collect_info.js');
(async () => {
  const shared = await Promise.all([1, 2, 3, 4, 5].map(() => collectGpuInfo(false)));
  const sharedRuns = runs;
  const forced = await Promise.all([collectGpuInfo(true), collectGpuInfo(true)]);
  console.log('RUNS ' + JSON.stringify({ sharedRuns, forcedRuns: runs - sharedRuns, answers: shared.length,
                                         forced: forced.map(info => info.forced) }));
  process.exit(0);
})();
"""


def test_the_preload_runs_one_gpu_collector_at_a_time(tmp_path):
    # Five refreshes while one collector runs share it; forced refreshes keep a run each.
    assert run_under_the_preload(tmp_path, COLLECTOR_SCRIPT, "RUNS") == {"sharedRuns": 1, "forcedRuns": 2, "answers": 5,
                                                      "forced": [True, True]}


# --- the real manager ---------------------------------------------------------------------------------------


@pytest.mark.e2e
def test_a_one_gpu_trial_runs_on_a_one_gpu_machine(tmp_path, fake_gpus):
    fake_gpus(1)
    summary = run_to_the_end(gpu_experiment(tmp_path), timeout=90)
    assert summary["status"] == "DONE"
    [trial] = summary["trials"]
    assert trial["status"] == "SUCCEEDED"
    assert trial["final"]["cuda_visible_devices"] == "0"
    assert trial["final"]["default"] == 512.0  # computed, on CUDA if it is really there, else on the CPU


def assert_two_at_a_time_on_distinct_gpus(trials: list[dict]) -> None:
    runs = [(t["final"]["start"], t["final"]["end"], t["final"]["cuda_visible_devices"]) for t in trials]
    assert {device for _, _, device in runs} == {"0", "1"}
    for start, _, _ in runs:  # at every trial's start: what runs then is at most two trials on distinct GPUs
        running = [device for other_start, other_end, device in runs if other_start <= start < other_end]
        assert len(running) <= 2 and len(set(running)) == len(running), runs


@pytest.mark.e2e
def test_the_table_i_config_on_two_gpus_runs_its_scopes_two_at_a_time(tmp_path, fake_gpus):
    """proxyless_scopes.yml as shipped (its tuner, five scopes, trialConcurrency 5, one GPU per trial), with the
    stand-in trial in place of the 300-epoch ResNet-50 searches: more trials asked for at once than there are
    GPUs, so the scheduler must hold three back, never run more than two, never hand out one GPU twice."""
    fake_gpus(2)
    config = yaml.safe_load((REPO / "nni_configs" / "proxyless_scopes.yml").read_text())
    shutil.copytree(FIXTURE, tmp_path / "trial")
    cifar = tmp_path / "trial" / "data" / "cifar-10-batches-py"  # the files resnas create checks for; never read
    cifar.mkdir(parents=True)
    for name in [f"data_batch_{index}" for index in range(1, 6)] + ["test_batch", "batches.meta"]:
        (cifar / name).touch()
    config.update(trialCommand="FIXTURE_SLEEP=4 python trial.py", trialCodeDirectory=str(tmp_path / "trial"),
                  experimentWorkingDirectory=str(tmp_path / "nni-experiments"))
    config["tuner"]["codeDirectory"] = str(REPO)
    path = tmp_path / "proxyless_scopes.yml"
    path.write_text(yaml.safe_dump(config))
    summary = run_to_the_end(path, timeout=300)
    trials = summary["trials"]
    assert all(trial["status"] == "SUCCEEDED" for trial in trials)
    assert sorted(t["final"]["scope"] for t in trials) == ["f", "l", "m", "none", "s"]
    assert_two_at_a_time_on_distinct_gpus(trials)

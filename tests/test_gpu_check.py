"""The prepared GPU check (benchmarks/gpu_check.py) keeps working where it will first run: a machine without NNI.

- The tiny preset runs on the CPU in a subprocess where `import nni` fails as on the lent GPU machine, and prints
  one JSON line with every job, every projection and positive numbers (its time is not asserted: no timing
  threshold in a test; about 40 s of one core here).
- The NNI-free ProxylessNAS supernet (benchmarks/nni_free.py) is the network install_binary_gates makes of NNI's
  ScopedResNet50: same labels, candidates, parameter names and outputs.
- A job that fails or meets the budget is a line of the report, and the run goes on.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks")]

import gpu_check  # noqa: E402
import nni_free  # noqa: E402

# `python -c` body: NNI made unimportable (as a missing module is), then the check run as a script.
WITHOUT_NNI = """
import importlib.abc, runpy, sys
class NoNni(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "nni" or name.startswith("nni."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, NoNni())
sys.argv[0] = "benchmarks/gpu_check.py"
runpy.run_path("benchmarks/gpu_check.py", run_name="__main__")
"""

PAPER_JOBS = [f"proxyless_search_{scope}" for scope in "smlf"] + [
    "proxyless_retrain_plain", "proxyless_retrain_costliest", "nash_start", "nash_child_first", "nash_child_last",
    "resbuilder_with_reg", "resbuilder_no_reg", "stagewise_start", "stagewise_deepest"]
NETWORKS = ("resnet56", "resnet50_224")
THROUGHPUT_JOBS = [f"throughput_{net}_{kind}" for net in NETWORKS for kind in ("data_only", "bf16", "fp32")]
TOP_KEYS = {"preset", "device", "device_name", "python", "torch", "cuda", "seconds", "budget_s", "stopped_early",
            "nni_importable", "nni_modules_loaded", "skipped_package_inits", "jobs", "projections"}
PROJECTIONS = ("proxyless_table1", "nash_table2", "resbuilder_cifar10", "stagewise_cifar10")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check") / "gpu_check.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    process = subprocess.run(
        [sys.executable, "-c", WITHOUT_NNI, "--device", "cpu", "--preset", "tiny", "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert process.returncode == 0, process.stderr[-3000:]
    lines = process.stdout.strip().splitlines()
    return json.loads(lines[-1]), lines, json.loads(out.read_text())


def test_tiny_preset_prints_one_json_line_without_nni(tiny_run):
    result, lines, written = tiny_run
    assert len(lines) == 1, "stdout is the JSON line alone (progress goes to stderr)"
    assert written == result
    assert TOP_KEYS <= set(result)
    assert (result["preset"], result["device"], result["stopped_early"]) == ("tiny", "cpu", False)
    assert result["nni_importable"] is False and result["nni_modules_loaded"] == []
    # Each package __init__ cut short names the import that needs NNI (file:line).
    assert all(".py:" in reason for reason in result["skipped_package_inits"].values())


def test_every_paper_job_measures_an_epoch(tiny_run):
    jobs = tiny_run[0]["jobs"]
    for name in PAPER_JOBS:
        job = jobs[name]
        assert "error" not in job, (name, job.get("error"), job.get("traceback"))
        assert job["epoch_seconds"] > 0 and job["images_per_second"] > 0, name
        assert job["timed_epoch_seconds"] and min(job["timed_epoch_seconds"]) > 0, name
        assert job["seconds"] > 0 and "peak_gpu_memory_bytes" in job and job["peak_gpu_memory_bytes"] is None, name
    assert jobs["resbuilder_with_reg"]["extra_losses"] and not jobs["resbuilder_no_reg"]["extra_losses"]
    assert jobs["proxyless_search_f"]["gated_labels"] > jobs["proxyless_search_s"]["gated_labels"]


def test_throughput_rows_on_the_cpu(tiny_run):
    jobs = tiny_run[0]["jobs"]
    for network in NETWORKS:
        data = jobs[f"throughput_{network}_data_only"]
        assert data["dataloader_images_per_second"] > 0 and data["device_images_per_second"] > 0
        row = jobs[f"throughput_{network}_fp32"]
        assert set(row["images_per_second"]) == {"bare", "fit", "bare_device", "fit_device"}
        assert min(row["images_per_second"].values()) > 0
        assert row["fit_over_bare"] > 0 and row["device_data_over_dataloader"] > 0
        assert "needs a CUDA GPU" in jobs[f"throughput_{network}_bf16"]["skipped"]  # bf16 autocast: CUDA only


def test_the_latency_check_builds_a_table_and_checks_it_on_the_device(tiny_run):
    latency = tiny_run[0]["jobs"]["latency_check"]
    assert "error" not in latency, latency.get("error")
    assert latency["statistic"] == "min" and latency["device"].startswith("cpu ")  # a CPU table: fastest runs
    assert set(latency["within_10_percent_by_space"]) == {"cifar_depth", "resbuilder"}
    assert latency["summary"]["architectures"] == latency["repeatability"]["architectures"] == 2
    assert {"3x32x32 basic", "3x32x32 resbuilder"} <= set(latency["overheads_ms"])


def test_projections_against_the_papers(tiny_run):
    projections = tiny_run[0]["projections"]
    assert set(projections) == set(PROJECTIONS)
    for name in PROJECTIONS:
        assert "error" not in projections[name], projections[name]
        assert projections[name]["gpu_hours"] > 0 and "stated_gpu_hours" in projections[name]
    assert projections["nash_table2"]["stated_gpu_hours"] == 12.0
    assert projections["nash_table2"]["measured_over_stated"] > 0
    assert set(projections["proxyless_table1"]["rows_gpu_hours"]) == {"plain", "s", "m", "l", "f"}
    assert projections["proxyless_table1"]["gpu_hours_upper"] > 0


def test_budget_and_failures_are_report_lines(tmp_path):
    run = gpu_check.Run(torch.device("cpu"), gpu_check.jobs.PRESETS["tiny"], budget_s=1e9, out=tmp_path / "r.json")
    run.job("broken", lambda: 1 / 0)
    run.job("fine", lambda: {"images_per_second": 1.0})
    assert run.results["broken"]["error"].startswith("ZeroDivisionError") and run.results["fine"]["seconds"] >= 0
    assert set(json.loads((tmp_path / "r.json").read_text())["jobs"]) == {"broken", "fine"}  # written per job
    run.budget_s = 0.0
    run.job("late", lambda: pytest.fail("a job past the budget must not start"))
    assert "budget" in run.results["late"]["skipped"] and run.stopped_early
    projections = gpu_check.project(run, {})
    assert set(projections) == set(PROJECTIONS) and all("error" in p for p in projections.values())


def test_nni_free_supernet_is_install_binary_gates_of_scoped_resnet50(one_thread_and_seeded):
    pytest.importorskip("nni")
    from search_spaces.spaces import ScopedResNet50
    from strategies.proxyless.binary_gates import install_binary_gates

    space = ScopedResNet50("m", width_multiplier=0.25)
    bank = install_binary_gates(space)
    ours, our_bank = nni_free.gated_scoped_resnet50("m", width_multiplier=0.25)
    assert our_bank.labels == bank.labels and our_bank.candidate_values == bank.candidate_values
    theirs = {name: tensor.shape for name, tensor in space.state_dict().items()}
    assert {name: tensor.shape for name, tensor in ours.state_dict().items()} == theirs
    ours.load_state_dict(space.state_dict())
    x = torch.randn(2, 3, 64, 64)
    for gates in (bank, our_bank):
        gates.resample("weight", torch.Generator().manual_seed(3))
    assert our_bank.active == bank.active
    torch.testing.assert_close(ours.eval()(x), space.eval()(x), rtol=0, atol=1e-6)

"""Latency budgets in the multi-trial tuners (fake table, made-up results): NASH draws children again until they fit
and never issues one over the target, the stage-wise search grows only within it, ResBuilder picks within it, a
start net over it is refused in one sentence, and the tuners stay torch-free."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from search_spaces.latency_table import DeviceSettings, Entry, LatencyTable, network_parts
from search_spaces.spec import ArchSpec, cifar_resnet_spec, nash_start_spec
from strategies.hill_climbing import HillClimbingTuner
from strategies.layer_pruning.tuner import LayerPruningTuner
from strategies.settings import SettingsError
from strategies.stagewise.settings import parse_stagewise_args
from strategies.stagewise.tuner import StagewiseTuner
from tuner_driver import issue_all_with_ids, nash_job_spec, run_to_end

REPO = Path(__file__).resolve().parents[1]
DIGITS = (1, 32, 32)  # digits as the trials see them: one channel, resized to 32 px, 10 classes


def fake_ms(macs: int) -> float:
    return 0.01 + macs * 1e-5


def write_table(path: Path, specs: list[ArchSpec]) -> Path:
    """A table of made-up timings, linear in MACs per family: the tuner's estimates of parts it lacks are exact."""
    table = LatencyTable(DeviceSettings("cpu", "fake CPU", threads=1))
    for spec in specs:
        for part in network_parts(spec, DIGITS):
            table.entries[part.key] = Entry(fake_ms(part.macs), 0.0, 5, part.family, part.macs)
    table.save(path)
    return path


def true_ms(spec: ArchSpec) -> float:
    return sum(fake_ms(part.macs) for part in network_parts(spec, DIGITS))


# ---- NASH ---------------------------------------------------------------------------------------------------------
NASH = {"dataset": "digits", "start_widths": [4, 8, 8], "n_steps": 3, "n_neighbours": 5, "n_morphisms": 2}


def nash_trial(params) -> tuple[ArchSpec, dict]:
    spec = nash_job_spec(params)
    accuracy = 0.5 + 0.001 * true_ms(spec)  # bigger is better: the search pushes against the budget
    return spec, {"default": accuracy, "val_accuracy": accuracy, "params": 1, "flops": 1, "latency_ms": true_ms(spec)}


def test_nash_never_trains_a_child_over_the_latency_target(tmp_path):
    start = nash_start_spec(10, (4, 8, 8), in_channels=1)
    # Two sizes per family: the children's new widths and layers are estimated along exact lines.
    table = write_table(tmp_path / "table.json", [start, nash_start_spec(10, (6, 12, 16), in_channels=1)])
    target = 2.2 * true_ms(start)  # about half the draws of two morphisms from the start net fit
    tuner = HillClimbingTuner(state_dir=str(tmp_path / "state"), latency_table=str(table), latency_target_ms=target,
                              **NASH)
    trained = []

    def trial(params: dict) -> dict:
        spec, result = nash_trial(params)
        trained.append((params["job"], true_ms(spec)))
        return result

    run_to_end(tuner, trial)
    children = [(key, ms) for key, ms in trained if "/child" in key]
    assert children and all(ms <= target for _, ms in children)
    jobs = tuner.state["jobs"]
    assert all(job["params"]["predicted_latency_ms"] == pytest.approx(ms, abs=1e-4)
               for key, ms in children for job in [jobs[key]])
    refused = [key for key, job in jobs.items() if job["status"] == "failed"]
    assert all("latency_target_ms" in jobs[key]["error"] for key in refused)
    assert tuner.state["lineage"][-1]["latency_ms"] <= target


def test_a_start_net_over_the_target_is_refused_in_one_sentence(tmp_path):
    start = nash_start_spec(10, (4, 8, 8), in_channels=1)
    table = write_table(tmp_path / "table.json", [start])
    with pytest.raises(SettingsError, match=r"the start net is predicted at .* ms, over latency_target_ms 0.5; raise"):
        HillClimbingTuner(state_dir=str(tmp_path), latency_table=str(table), latency_target_ms=0.5, **NASH)
    args = {"dataset": "digits", "widths": [4, 8, 8], "start_depths": [2, 2, 2], "latency_table": str(table)}
    with pytest.raises(SettingsError, match=r"the start net \[2, 2, 2\] is predicted at"):
        parse_stagewise_args({**args, "latency_target_ms": 0.1})


# ---- stage-wise ---------------------------------------------------------------------------------------------------
STAGEWISE = {"dataset": "digits", "widths": [4, 8, 8], "start_depths": [1, 1, 1], "delta": 1, "iterations": 4}


def test_stagewise_grows_only_within_the_latency_target(tmp_path):
    nets = [cifar_resnet_spec((2, 2, 2), (4, 8, 8), 10, 1)]
    table = write_table(tmp_path / "table.json", nets)
    costs = {stage: true_ms(cifar_resnet_spec(tuple(1 + (i == stage) for i in range(3)), (4, 8, 8), 10, 1))
             for stage in range(3)}
    base = true_ms(cifar_resnet_spec((1, 1, 1), (4, 8, 8), 10, 1))
    target = base + 2.5 * (min(costs.values()) - base)  # room for two of layer3's blocks, not three
    tuner = StagewiseTuner(state_dir=str(tmp_path / "state"), latency_table=str(table), latency_target_ms=target,
                           **STAGEWISE)
    trained = []

    def trial(params: dict) -> dict:
        depths = params.get("depths")
        if depths is None:  # the final test and export
            return {"default": 0.9, "test_accuracy": 0.9, "val_accuracy": 0.8, "start_default": 0.7}
        trained.append((params["job"], true_ms(cifar_resnet_spec(tuple(depths), (4, 8, 8), 10, 1))))
        return {"default": 0.5, "val_accuracy": 0.5, "depths": depths, "iteration": params["iteration"],
                "stage_scores": [0.1 * d for d in depths], "params": 1, "macs": 1}

    run_to_end(tuner, trial)
    assert all(ms <= target for _, ms in trained)
    # Growing layer1 or layer2 alone is over the target: only layer3 grows, until its next block would not fit.
    assert [key for key, _ in trained] == ["start", "iter1/temporary", "iter2/temporary"]
    assert tuner.state["iterations"][-1]["depths"] == [1, 1, 3]
    assert tuner.state["stop_reason"] == "no stage can grow past the donor's depth or the latency budget"


# ---- ResBuilder ---------------------------------------------------------------------------------------------------
def test_resbuilder_picks_the_best_architecture_within_the_latency_target(tmp_path):
    table = write_table(tmp_path / "table.json", [nash_start_spec(10, (4, 8, 8), in_channels=1)])
    tuner = LayerPruningTuner(state_dir=str(tmp_path / "state"), dataset="digits", n_morphnet=1, n_insertions=0,
                              latency_table=str(table), latency_target_ms=2.0)
    results = {"no_reg_ri": (0.9, 3.0), "no_reg_wi": (0.8, 1.0)}  # (val accuracy, latency): the best is too slow
    parameter_id = 0
    while "final" not in tuner.jobs:
        issued = issue_all_with_ids(tuner, parameter_id)
        assert issued, "the tuner stalled"
        parameter_id += len(issued)
        for key, (pid, params) in issued.items():
            accuracy, latency = results.get(params["kind"], (0.5, 1.0))
            tuner.receive_trial_result(pid, params, {"default": accuracy, "val_accuracy": accuracy, "flops": 1,
                                                     "latency_ms": latency})
    assert tuner.state["best"].endswith("no_reg_wi")


def test_resbuilders_width_step_scales_to_the_latency_target_instead_of_zeta(tmp_path):
    import torch

    from search_spaces.builder import build_model
    from search_spaces.edits.resbuilder import morphnet_width_step
    from search_spaces.spec import resbuilder_start_spec
    from strategies.layer_pruning.settings import parse_layer_pruning_args
    from strategies.layer_pruning.trial import latency_width_budget

    spec = resbuilder_start_spec(10, in_channels=1)
    table = write_table(tmp_path / "table.json", [spec])
    target = 0.6 * true_ms(spec)  # widths must shrink; zeta (1e8 FLOPs) alone would let them grow
    settings = parse_layer_pruning_args({"dataset": "digits", "latency_table": str(table),
                                         "latency_target_ms": target})
    state = build_model(spec, zero_init_last=False).state_dict()
    for key in [key for key in state if key.endswith(".weight") and state[key].dim() == 1]:
        state[key] = torch.rand(state[key].shape, generator=torch.Generator().manual_seed(0)) + 0.1  # all alive
    new_spec, _, info = morphnet_width_step(spec, state, DIGITS, settings.zeta, settings.gamma_threshold,
                                            budget=latency_width_budget(settings))
    assert info["budget"] == "ms of predicted latency"
    # widths the table lacks are estimated from their family: within 1 % of the made-up truth here
    assert true_ms(new_spec) == pytest.approx(info["cost_after"], rel=0.01) and info["cost_after"] <= target
    assert info["omega"] < 1  # the budget took channels away
    with pytest.raises(ValueError, match="raise latency_target_ms"):
        tiny = parse_layer_pruning_args({"dataset": "digits", "latency_table": str(table), "latency_target_ms": 1e-3})
        morphnet_width_step(spec, state, DIGITS, tiny.zeta, tiny.gamma_threshold, budget=latency_width_budget(tiny))


# ---- NNI's built-in tuners (the random baseline) ------------------------------------------------------------------
def test_a_sample_over_the_latency_target_fails_before_training(tmp_path):
    from strategies.sampled.trial import run_sampled_trial

    small, large = cifar_resnet_spec((1, 1, 1), num_classes=10, in_channels=1), \
        cifar_resnet_spec((3, 3, 3), num_classes=10, in_channels=1)
    table = write_table(tmp_path / "table.json", [small, large])
    settings = {"space": "cifar_depths", "depth_ranges": [[1, 3], [1, 3], [1, 3]],
                "method_settings": {"dataset": "digits", "image_size": 32, "start_depths": [1, 1, 1], "epochs": 1,
                                    "latency_table": str(table), "latency_target_ms": 0.5 * (true_ms(small) +
                                                                                           true_ms(large))}}
    with pytest.raises(SettingsError, match="this sample is predicted at .* over latency_target_ms"):
        run_sampled_trial({"settings": settings, "sample": {f"layer{s}_depth": 3 for s in (1, 2, 3)}}, tmp_path, None)


def test_tuners_with_a_latency_budget_import_no_torch(tmp_path):
    table = write_table(tmp_path / "table.json", [nash_start_spec(10, (4, 8, 8), in_channels=1)])
    code = ("import json, sys; from strategies.hill_climbing import HillClimbingTuner; "
            f"HillClimbingTuner(state_dir={str(tmp_path / 's')!r}, latency_table={str(table)!r}, "
            f"latency_target_ms=50.0, **{json.dumps(NASH)}); "
            "print(json.dumps(sorted(m for m in ('torch', 'timm', 'pytorch_lightning') if m in sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []

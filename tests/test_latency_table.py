"""Latency tables: the parts a network is cut into follow the builder, the JSON round-trips, prediction sums the
entries, missing parts are measured lazily (fake timings: no timing threshold anywhere here) or estimated, and a
table of another device is refused in one sentence."""

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from search_spaces.builder import build_model
from search_spaces.cost import measure_cost
from search_spaces.errors import LatencyTableError
from search_spaces.latency import SynchronisedTimer, Timing, device_settings, locked_table, measure_parts, use_timer
from search_spaces.latency_table import (
    DeviceSettings,
    Entry,
    LatencyTable,
    network_parts,
    predict_latency,
)
from search_spaces.spec import cifar_resnet_spec, nash_start_spec, resbuilder_start_spec, resnet_spec
from strategies.cli.main import main

REPO = Path(__file__).resolve().parents[1]


def fake_timer(module: nn.Module, example: torch.Tensor) -> Timing:
    """Deterministic and additive: 1 ms per million parameters + 0.01 ms per call."""
    return Timing(sum(p.numel() for p in module.parameters()) * 1e-6 + 0.01, 0.0, 1)


NETWORKS = {
    "resnet50@64": (resnet_spec(50, num_classes=10), (3, 64, 64)),
    "cifar_resnet": (cifar_resnet_spec((2, 3, 1)), (3, 32, 32)),
    "nash_start": (nash_start_spec(10, (8, 16, 16)), (3, 32, 32)),
    "rb0": (resbuilder_start_spec(10, 8, in_channels=1), (1, 28, 28)),
}


@pytest.mark.parametrize("name", list(NETWORKS))
def test_parts_follow_the_builder_in_shape_and_macs(name):
    spec, size = NETWORKS[name]
    parts = network_parts(spec, size)
    model = build_model(spec).eval()
    seen = []
    for stage_index, block_index, _ in spec.iter_blocks():
        model.get_submodule(f"layer{stage_index}.{block_index}").register_forward_hook(
            lambda module, args, out: seen.append((tuple(args[0].shape[1:]), tuple(out.shape[1:]))))
    with torch.no_grad():
        model(torch.zeros(1, *size))
    blocks = [part for part in parts if part.kind == "block"]
    assert [(part.in_shape, part.out_shape) for part in blocks] == seen
    assert parts[0].kind == "stem" and parts[-1].kind == "head"
    convs = sum(part.macs for part in parts if part.kind != "pool")  # measure_cost counts no pooling
    assert convs == measure_cost(spec, size).macs


def test_equal_blocks_share_one_key_and_the_key_names_what_differs():
    parts = network_parts(resnet_spec(50, num_classes=10), (3, 224, 224))
    keys = [part.key for part in parts if part.kind == "block"]
    assert len(keys) == 16 and len(set(keys)) == 8  # per stage: the strided/projected first block, then the rest
    assert keys[0] == "bottleneck k3/s1 64->64-64-256 relu proj @64x56x56"


def a_table(**overrides) -> LatencyTable:
    return LatencyTable(DeviceSettings(**{"device": "cpu", "device_name": "fake", "threads": 1, **overrides}))


def test_prediction_is_the_sum_of_entries_plus_overhead_and_missing_parts_are_named_or_estimated(tmp_path):
    spec, size = NETWORKS["cifar_resnet"]
    table = a_table()
    for part in network_parts(spec, size):
        table.entries[part.key] = Entry(0.001 * part.macs / 1e3 + 0.05, 0.0, 5, part.family, part.macs)
    table.part_overhead_ms = 0.5
    expected = sum(table.entries[p.key].median_ms + 0.5 for p in network_parts(spec, size))
    assert predict_latency(spec, table, size).total_ms == pytest.approx(expected)
    deeper = cifar_resnet_spec((2, 3, 1), widths=(16, 32, 48))  # a width the table never saw
    with pytest.raises(LatencyTableError, match="no entry for `basic k3/s2 32->48-48 relu proj.*resnas latency-table"):
        predict_latency(deeper, table, size)
    estimate = predict_latency(deeper, table, size, estimate_missing=True)
    assert estimate.facts()["latency_estimated_parts"] == 2  # layer3.0 and the head
    block = next(p for p in network_parts(deeper, size) if p.key == estimate.estimated[0])
    # a line through the family's (linear) points is exact; the head, one point, is scaled in proportion
    assert dict(estimate.parts_ms)[block.key] == pytest.approx(0.001 * block.macs / 1e3 + 0.05 + 0.5, rel=1e-6)
    table.save(tmp_path / "t.json")
    assert LatencyTable.load(tmp_path / "t.json") == table


def test_a_cpu_table_predicts_from_fastest_runs_a_gpu_table_from_medians_and_old_tables_stay_medians(tmp_path):
    spec, size = NETWORKS["nash_start"]
    table = a_table()
    for part in network_parts(spec, size):
        table.entries[part.key] = Entry(1.0, 0.2, 15, part.family, part.macs, min_ms=0.75)
    parts = len(network_parts(spec, size))
    assert table.statistic == "min" and a_table(device="cuda", threads=None).statistic == "median"
    assert predict_latency(spec, table, size).total_ms == pytest.approx(0.75 * parts)
    assert predict_latency(spec, table, size, statistic="median").total_ms == pytest.approx(1.0 * parts)
    table.save(tmp_path / "t.json")
    assert LatencyTable.load(tmp_path / "t.json").statistic == "min"
    data = json.loads((tmp_path / "t.json").read_text())
    del data["statistic"]  # written before the field existed: its overhead was calibrated on medians
    (tmp_path / "old.json").write_text(json.dumps(data))
    assert LatencyTable.load(tmp_path / "old.json").statistic == "median"
    data["statistic"] = "mean"
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(LatencyTableError, match="is damaged .*unknown latency statistic 'mean'"):
        LatencyTable.load(tmp_path / "bad.json")


def test_calibration_fits_an_overhead_per_kind_of_network_and_predictions_use_their_own(tmp_path):
    from search_spaces.builder import ResNasNet
    from search_spaces.latency import calibrate

    whole_ms = {("basic", 32): 1.0, ("conv", 32): 5.0, ("basic", 64): 100.0}

    def timer(module, example):  # parts 0.01 ms each; whole networks as whole_ms says
        if not isinstance(module, ResNasNet):
            return Timing(0.01, 0.0, 1)
        return Timing(whole_ms[module.arch_spec.stages[0].blocks[0].kind, example.shape[-1]], 0.0, 1)

    cifar, nash = cifar_resnet_spec((1, 1, 1)), nash_start_spec(10)
    small, large = (3, 32, 32), (3, 64, 64)
    p_cifar, p_nash = len(network_parts(cifar, small)), len(network_parts(nash, small))
    table = LatencyTable(device_settings("cpu", threads=1))
    with use_timer(timer):
        calibration = calibrate(table, [(cifar, small), (cifar, small), (nash, small), (cifar, large)])
    assert table.overheads["3x32x32 basic"] == pytest.approx((1.0 - 0.01 * p_cifar) / p_cifar)
    assert table.overheads["3x32x32 conv"] == pytest.approx((5.0 - 0.01 * p_nash) / p_nash)
    assert table.overheads["3x64x64 basic"] == pytest.approx((100.0 - 0.01 * p_cifar) / p_cifar)
    assert table.overheads["3x32x32"] == table.overheads["3x32x32 basic"]  # 2 of its 3 networks
    for spec, size, expected in ((cifar, small, 1.0), (nash, small, 5.0), (cifar, large, 100.0)):
        assert predict_latency(spec, table, size).total_ms == pytest.approx(expected)
    # another kind at a calibrated size takes that size's overhead; an uncalibrated size the one over all networks
    resbuilder = resbuilder_start_spec(10, 8)
    assert table.overhead_for(network_parts(resbuilder, small)) == table.overheads["3x32x32"]
    assert table.overhead_for(network_parts(cifar, (3, 48, 48))) == table.part_overhead_ms
    assert calibration["median_relative_error"]["3x32x32 conv"] == 0.0
    table.save(tmp_path / "t.json")
    assert LatencyTable.load(tmp_path / "t.json") == table


@pytest.mark.parametrize("content, message", [
    ("{", "cannot be read"),
    ('{"format": "other"}', "not a resnas latency table"),
    ('{"format": "resnas-latency-table", "version": 99}', "table version 99"),
    ('{"format": "resnas-latency-table", "version": 1, "device": {"gpu": 1}}', "is damaged"),
])
def test_unreadable_tables_are_refused_in_one_sentence(tmp_path, content, message):
    path = tmp_path / "table.json"
    path.write_text(content)
    with pytest.raises(LatencyTableError, match=message) as error:
        LatencyTable.load(path)
    assert str(error.value).count(". ") == 0 and "resnas latency-table" in str(error.value)
    with pytest.raises(LatencyTableError, match="does not exist"):
        LatencyTable.load(tmp_path / "none.json")


def test_missing_parts_are_measured_once_and_another_device_is_refused(tmp_path):
    spec, size = NETWORKS["nash_start"]
    here = device_settings("cpu", batch_size=2, threads=1)
    with use_timer(fake_timer), locked_table(tmp_path / "t.json", here) as table:
        assert measure_parts(table, network_parts(spec, size)) == len(network_parts(spec, size))
        assert measure_parts(table, network_parts(spec, size)) == 0
    saved = LatencyTable.load(tmp_path / "t.json")
    head = network_parts(spec, size)[-1]
    assert saved.entries[head.key].median_ms == pytest.approx((16 * 10 + 10) * 1e-6 + 0.01)
    assert saved.device.batch_size == 2 and saved.device.threads == 1
    with pytest.raises(LatencyTableError, match=r"batch 2, .* differs in batch_size"):
        with locked_table(tmp_path / "t.json", device_settings("cpu", batch_size=1)):
            pass
    elsewhere = a_table(device_name="another CPU")
    with pytest.raises(LatencyTableError, match="measured on cpu another CPU.*device_name.*differ"):
        measure_parts(elsewhere, network_parts(spec, size))


def test_the_real_timer_times_a_module():
    timing = SynchronisedTimer(warmup_runs=1, runs=3, min_run_ms=1.0)(nn.Conv2d(3, 4, 3), torch.zeros(1, 3, 8, 8))
    assert timing.median_ms > 0 and timing.spread_ms >= 0 and timing.runs == 3


def test_the_command_fills_a_table_checks_predictions_and_refuses_other_settings(tmp_path, capsys):
    table, report = tmp_path / "cpu.json", tmp_path / "check.json"
    with use_timer(fake_timer):
        assert main(["latency-table", str(table), "--space", "cifar_depth", "--space", "nash"]) == 0
        filled = len(LatencyTable.load(table).entries)
        assert main(["latency-table", str(table), "--space", "cifar_depth", "--calibrate", "2", "--check", "2",
                     "--out", str(report)]) == 0
        assert main(["latency-table", str(table), "--batch-size", "4"]) == 2
    # cifar_depth: stem, head, 5 block keys (layer1's first block keeps the shape, so it equals the second);
    # nash: stem, 2 pools, 2 convs, head
    assert filled == 13
    data = json.loads(report.read_text())
    assert data["summary"]["architectures"] == 2 and {row["space"] for row in data["rows"]} == {"cifar_depth"}
    calibration = LatencyTable.load(table).calibration
    assert len(calibration["networks"]) == 2 and "median relative error" in calibration["method"]
    # fake timings are additive: a whole network is one call (+0.01 ms) where its parts were one each
    assert LatencyTable.load(table).overheads["3x32x32 basic"] < 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("resnas latency-table: ") and "batch_size" in err[-1]
    assert data["statistic"] == "min" and data["summary"] == data["summary_min"]
    # another statistic drops the overhead calibrated on the old one
    with use_timer(fake_timer):
        assert main(["latency-table", str(table), "--statistic", "median"]) == 0
    switched = LatencyTable.load(table)
    assert switched.statistic == "median" and switched.part_overhead_ms == 0 and switched.calibration == {}
    assert switched.overheads == {}
    assert "calibrate again" in capsys.readouterr().out


def test_the_command_measures_what_a_configs_search_needs(tmp_path, capsys):
    from search_spaces.latency_table import network_parts
    from strategies.latency_networks import config_networks

    table = tmp_path / "cpu.json"
    quickstart = REPO / "nni_configs" / "quickstart.yml"
    with use_timer(fake_timer):
        assert main(["latency-table", str(table), "--config", str(quickstart)]) == 0
    specs, size = config_networks(quickstart)
    assert size == (1, 33, 33) and len(specs) == 6  # 2 kernels x 3 activations
    entries = LatencyTable.load(table).entries
    # every candidate of every searched block of scope m (stages 3 and 4: 6 + 3 blocks), and the rest once
    blocks = {part.key for spec in specs for part in network_parts(spec, size) if part.kind == "block"}
    assert set(entries) == {part.key for spec in specs for part in network_parts(spec, size)}
    assert len({key for key in blocks if " mish " in key and " k5/" in key}) >= 4  # first/later block per stage
    stagewise = REPO / "nni_configs" / "stagewise_quick.yml"
    assert len(config_networks(stagewise)[0]) == 1
    capsys.readouterr()
    assert main(["latency-table", str(table), "--config", str(REPO / "nni_configs" / "random_scope_m_quick.yml")]) == 2
    assert "runs no resnas method" in capsys.readouterr().err


def test_an_export_states_its_latency_and_the_device_it_holds_for(tmp_path):
    from search_spaces.export import export_to_timm
    from search_spaces.model_card import ModelCard
    from strategies.multi_trial.job_trial import export_latency
    from strategies.stagewise.settings import parse_stagewise_args

    spec = cifar_resnet_spec((1, 1, 1), (4, 8, 8), 10, 1)
    table = tmp_path / "cpu.json"
    with locked_table(table, device_settings("cpu")):
        pass
    settings = parse_stagewise_args({"dataset": "digits", "widths": [4, 8, 8], "start_depths": [1, 1, 1],
                                     "latency_table": str(table)})
    with use_timer(fake_timer):
        facts = export_latency(spec, settings)  # measures the parts into the table, then the whole network
    assert facts["latency_ms"] == pytest.approx(predict_latency(spec, LatencyTable.load(table), (1, 32, 32)).total_ms,
                                                abs=1e-4)
    assert facts["measured_latency_ms"] == pytest.approx(fake_timer(build_model(spec), None).median_ms, abs=1e-4)
    assert facts["latency_device"].startswith("cpu ") and facts["latency_device"].endswith("input 1x32x32")
    card = ModelCard(method="stagewise",
                     **{key: facts[key] for key in ("latency_ms", "measured_latency_ms", "latency_device")})
    folder = export_to_timm(spec, build_model(spec).eval(), tmp_path / "export", input_size=(1, 32, 32), card=card)
    readme = (folder / "README.md").read_text()
    stated = f"- **Latency:** {facts['latency_ms']:.4g} ms predicted, measured {facts['measured_latency_ms']:.4g} ms on cpu "
    assert stated in readme
    record = json.loads((folder / "resnas.json").read_text())
    assert (record["card"]["latency_ms"], record["card"]["latency_device"]) == (facts["latency_ms"],
                                                                                facts["latency_device"])

"""ProxylessNAS's latency loss: the expected latency under the gates is the table's, its gradient reaches the
kernel and activation gates with the sign that favours the cheaper candidate (both loss forms), an architecture
step moves towards it, and the settings refuse what cannot work. Fake timings only."""

import json
import math

import pytest
import torch
from torch import nn

from search_spaces.latency import Timing, device_settings, locked_table, use_timer
from search_spaces.latency_table import LatencyTable, predict_latency
from search_spaces.spaces import ScopedResNet50
from strategies.proxyless.gate_latency import expected_latency_ms, latency_loss
from strategies.proxyless.search import ProxylessSearch
from strategies.proxyless.settings import ProxylessSearchConfig, ProxylessSettings
from strategies.proxyless.trajectory import GateTrajectory
from strategies.settings import SettingsError, parse_settings

INPUT = (3, 16, 16)


def fake_timer(module: nn.Module, example: torch.Tensor) -> Timing:
    """1 ms per thousand parameters (a 5x5 middle conv costs more), + 0.5 ms per Mish layer."""
    mish = sum(isinstance(layer, nn.Mish) for layer in module.modules())
    return Timing(sum(p.numel() for p in module.parameters()) * 1e-3 + 0.5 * mish, 0.0, 1)


@pytest.fixture
def table(tmp_path):
    path = tmp_path / "cpu.json"
    with locked_table(path, device_settings("cpu")):
        pass  # an empty table of this machine: the search measures what it needs into it
    return path


def search(table, **config) -> ProxylessSearch:
    torch.manual_seed(0)
    space = ScopedResNet50("s", width_multiplier=1 / 16, stem="cifar", num_classes=10)
    with use_timer(fake_timer):
        return ProxylessSearch(space, ProxylessSearchConfig(input_size=INPUT, latency_table=table and str(table),
                                                            **config))


def test_the_latency_gradient_reaches_the_gates_and_favours_the_cheaper_candidate(table):
    found = search(table, latency_target_ms=5.0)
    for form in ("add#linear", "mul#log"):
        found.bank.zero_grad()
        expected = expected_latency_ms(found.bank, found.candidate_latency)
        config = ProxylessSearchConfig(latency_target_ms=5.0, latency_loss=form)
        latency_loss(torch.tensor(2.0), expected, config).backward()
        for block in range(3):  # layer4's blocks: k3 < k5, and relu = leaky_relu < mish
            kernel = found.bank.alpha[f"layer4_{block}_kernel"].grad
            act = found.bank.alpha[f"layer4_{block}_act"].grad
            assert kernel[0] < 0 < kernel[1], form  # raising the 5x5 logit raises the loss
            assert act[2] > 0 > act[0] and act[0] == pytest.approx(act[1]), form
    assert found.expected_latency() == pytest.approx(float(expected.detach()))


def test_the_expected_latency_of_a_decided_supernet_is_the_tables_prediction_of_that_network(table):
    found = search(table, latency_target_ms=5.0)
    with torch.no_grad():
        for label, values in found.bank.candidate_values.items():
            found.bank.alpha[label].fill_(-30.0)
            found.bank.alpha[label][-1] = 30.0  # every block k5 / mish
    spec = found.model.to_spec(found.argmax_sample())
    predicted = predict_latency(spec, LatencyTable.load(table), INPUT).total_ms
    assert found.expected_latency() == pytest.approx(predicted, rel=1e-5)


def test_a_table_alone_reports_the_expected_latency_and_leaves_the_loss_alone(table):
    plain, reported = search(None), search(table)
    assert plain.expected_latency() is None and reported.expected_latency() > 0
    x, y = torch.randn(4, *INPUT), torch.randint(0, 10, (4,))
    plain.arch_step(x, y)
    reported.arch_step(x, y)  # same seed, same start: without a target the same architecture step
    for label in plain.bank.labels:
        assert torch.equal(plain.bank.alpha[label], reported.bank.alpha[label])


def test_the_pick_within_the_target_gives_up_the_least_probability_per_ms(table):
    from strategies.proxyless.gate_latency import pick_within_target

    found = search(table, latency_target_ms=5.0)
    with torch.no_grad():
        for label in found.bank.labels:  # argmax everywhere: k5 / mish, the slowest; block 0 the most certain
            found.bank.alpha[label].copy_(torch.linspace(0.0, 1.0, len(found.bank.candidate_values[label])))
        found.bank.alpha["layer4_0_kernel"].copy_(torch.tensor([0.0, 5.0]))
        found.bank.alpha["layer4_0_act"].copy_(torch.tensor([0.0, 0.0, 5.0]))

    def latency_of(sample: dict) -> float:
        return predict_latency(found.model.to_spec(sample), LatencyTable.load(table), INPUT).total_ms

    slowest = latency_of(found.argmax_sample())
    fastest = latency_of({label: values[0] for label, values in found.bank.candidate_values.items()})
    target = 0.5 * (slowest + fastest)
    sample, ms, within = pick_within_target(found.bank, found.candidate_latency, target)
    assert within and ms <= target and ms == pytest.approx(latency_of(sample), rel=1e-5)
    assert sample["layer4_0_kernel"] == "k5" and sample["layer4_0_act"] == "mish"  # kept: the gates are sure of it
    assert sample != found.argmax_sample()
    assert pick_within_target(found.bank, found.candidate_latency, slowest + 1)[0] == found.argmax_sample()
    sample, ms, within = pick_within_target(found.bank, found.candidate_latency, 0.5 * fastest)
    assert not within and ms == pytest.approx(fastest, rel=1e-5)


def test_an_architecture_step_moves_towards_the_faster_kernel_and_epochs_record_the_expected_latency(table, tmp_path):
    found = search(table, latency_target_ms=2.0, latency_loss="add#linear", latency_lambda=100.0, arch_lr=0.1)
    x, y = torch.randn(4, *INPUT), torch.randint(0, 10, (4,))
    before = found.expected_latency()
    for _ in range(3):
        found.arch_step(x, y)
    assert found.expected_latency() < before
    assert found.gate_probabilities()["layer4_0_kernel"][0] > 0.5
    data = [(torch.randn(2, *INPUT), torch.randint(0, 10, (2,)))]
    metrics = found.run_epoch(data, data)
    assert metrics["expected_latency_ms"] == pytest.approx(found.expected_latency())
    trajectory = GateTrajectory(found.bank.candidate_values)
    trajectory.record(found.gate_probabilities(), metrics["expected_latency_ms"])
    trajectory.save(tmp_path / "gates.json")
    assert GateTrajectory.load(tmp_path / "gates.json").expected_latency_ms == [metrics["expected_latency_ms"]]
    trajectory.plot(tmp_path / "gates.png")
    assert (tmp_path / "gates.png").is_file()


def test_mul_log_is_the_official_form():
    config = ProxylessSearchConfig(latency_target_ms=80.0, latency_loss="mul#log")
    loss = latency_loss(torch.tensor(1.5), torch.tensor(100.0), config)
    assert float(loss) == pytest.approx(1.5 * 0.2 * (math.log(100) / math.log(80)) ** 0.3)
    linear = ProxylessSearchConfig(latency_target_ms=80.0, latency_loss="add#linear")
    assert float(latency_loss(torch.tensor(1.5), torch.tensor(100.0), linear)) == pytest.approx(1.5 + 0.1 * 20 / 80)


def test_latency_settings_refuse_what_cannot_work(table, tmp_path):
    def parse(**values):
        return parse_settings(ProxylessSettings, {"scope": "s", **values}, "test")

    settings = parse(latency_table=str(table), latency_target_ms=30.0)
    assert settings.latency_loss == "mul#log" and (settings.latency_alpha, settings.latency_beta) == (0.2, 0.3)
    config = ProxylessSearchConfig.from_settings(settings, INPUT)
    assert (config.latency_table, config.latency_target_ms, config.latency_lambda) == (str(table), 30.0, 0.1)
    with pytest.raises(SettingsError, match="not positive at 0.8 ms; use latency_loss add#linear"):
        parse(latency_table=str(table), latency_target_ms=0.8)
    assert parse(latency_table=str(table), latency_target_ms=0.8, latency_loss="add#linear").latency_target_ms == 0.8
    alone = parse(latency_table=str(table))  # latency reported, no latency loss
    assert ProxylessSearchConfig.from_settings(alone, INPUT).latency_target_ms is None
    with pytest.raises(SettingsError, match="needs a latency_table"):
        parse(latency_target_ms=30.0)
    with pytest.raises(SettingsError, match="does not exist; measure one on the target device with `resnas latency-table .* --config"):
        parse(latency_table=str(tmp_path / "none.json"), latency_target_ms=30.0)
    with pytest.raises(SettingsError, match="latency_loss='mul' is not a valid one of 'mul#log', 'add#linear'"):
        parse(latency_loss="mul")


def test_a_trial_with_a_latency_table_reports_expected_and_predicted_latency(table, tmp_path):
    from strategies.reporting import PrintReporter
    from strategies.trial import run_trial
    from test_proxyless_trial import SCOPE_CONFIGS, smoke_parameters

    parameters = smoke_parameters(SCOPE_CONFIGS[0], latency_table=str(table), latency_target_ms=50.0,
                                  latency_loss="add#linear", image_size=129)
    reporter = PrintReporter()
    with use_timer(fake_timer):
        result = run_trial(parameters, tmp_path / "trial", reporter)
    assert reporter.history[0]["expected_latency_ms"] > 0
    assert GateTrajectory.load(tmp_path / "trial" / "gates.json").expected_latency_ms == [
        reporter.history[0]["expected_latency_ms"]]
    spec_latency = predict_latency(search_spec(tmp_path / "trial"), LatencyTable.load(table), (1, 129, 129)).total_ms
    assert result["latency_ms"] == pytest.approx(spec_latency, abs=1e-4) and result["measured_latency_ms"] > 0
    # the network retrained is the one picked within the target, and its prediction is the pick's
    assert result["latency_pick"] in ("argmax", "within_target")
    assert result["picked_latency_ms"] == pytest.approx(result["latency_ms"], abs=1e-3)
    assert result["picked_within_target"] == (result["latency_ms"] <= 50.0)
    record = json.loads((tmp_path / "trial" / "timm_export" / "resnas.json").read_text())
    assert record["card"]["latency_ms"] == result["latency_ms"] and "batch 1" in record["card"]["latency_device"]


def search_spec(folder):
    from search_spaces.spec import ArchSpec

    return ArchSpec.from_json((folder / "arch.json").read_text())

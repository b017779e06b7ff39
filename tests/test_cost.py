"""Cost: parameters, FLOPs and MACs per layer and in total, against hand computation and timm's figure."""

import pytest
from torch import nn

from search_spaces import build_model, measure_cost, nash_start_spec, resnet_spec


def test_hand_computed_flops_of_the_nash_start_net():
    spec = nash_start_spec(num_classes=10, widths=(4, 8, 16))
    report = measure_cost(spec, input_size=(3, 16, 16))
    layers = {layer.name: layer for layer in report.layers}
    # conv: 2 * k*k * C_in * C_out * H_out * W_out
    assert layers["conv1"].flops == 2 * 9 * 3 * 4 * 16 * 16
    assert layers["layer1.0.conv1"].flops == 2 * 9 * 4 * 8 * 8 * 8  # after a 2x2 max pool
    assert layers["layer2.0.conv1"].flops == 2 * 9 * 8 * 16 * 4 * 4
    assert layers["fc"].flops == 2 * 16 * 10
    assert layers["conv1"].macs == layers["conv1"].flops // 2
    assert report.flops == sum(layer.flops for layer in report.layers)
    assert report.macs == report.flops // 2


def test_params_total_and_per_layer():
    model = build_model(resnet_spec(18, num_classes=10, width_multiplier=0.25))
    report = measure_cost(model, input_size=(3, 32, 32))
    assert report.params == sum(p.numel() for p in model.parameters())
    assert sum(layer.params for layer in report.layers) == report.params
    assert {layer.name for layer in report.layers} <= {name for name, _ in model.named_modules()}


def test_resnet50_matches_timms_published_4_1_gmacs():
    report = measure_cost(resnet_spec(50, num_classes=1000), input_size=(3, 224, 224))
    assert report.params == 25_557_032
    assert report.macs / 1e9 == pytest.approx(4.1, rel=0.02)


def test_report_serialises_with_macs():
    data = measure_cost(nash_start_spec(widths=(4, 8, 16)), input_size=(3, 8, 8)).to_dict()
    assert data["macs"] == data["flops"] // 2 and data["layers"][0]["macs"] == data["layers"][0]["flops"] // 2


def test_measuring_leaves_the_training_mode_alone():
    model = build_model(nash_start_spec(widths=(4, 8, 16))).train()
    measure_cost(model, input_size=(3, 8, 8))
    assert model.training and all(m.training for m in model.modules() if isinstance(m, nn.BatchNorm2d))

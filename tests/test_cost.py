"""Cost: parameters, FLOPs and MACs per layer and in total, against hand computation and timm's figure."""

import pytest
import torch
from torch import nn

from search_spaces import SpecError, build_model, measure_cost, nash_start_spec, resnet_spec


def conv_flops(kernel, c_in, c_out, h_out, w_out):
    return 2 * kernel * kernel * c_in * c_out * h_out * w_out


def test_hand_computed_flops_of_the_nash_start_net():
    spec = nash_start_spec(num_classes=10, widths=(4, 8, 16))
    report = measure_cost(spec, input_size=(3, 16, 16))
    layers = {layer.name: layer for layer in report.layers}
    assert layers["conv1"].flops == conv_flops(3, 3, 4, 16, 16)
    assert layers["layer1.0.conv1"].flops == conv_flops(3, 4, 8, 8, 8)  # after a 2x2 max pool
    assert layers["layer2.0.conv1"].flops == conv_flops(3, 8, 16, 4, 4)
    assert layers["fc"].flops == 2 * 16 * 10
    assert layers["conv1"].params == 3 * 4 * 9 and layers["fc"].params == 16 * 10 + 10
    assert all(layer.macs * 2 == layer.flops for layer in report.layers)
    assert report.flops == sum(layer.flops for layer in report.layers)
    assert report.macs * 2 == report.flops


def test_strided_residual_block_by_hand():
    spec = resnet_spec(18, num_classes=10, stem="cifar", width_multiplier=0.0625, stage_depths=(1, 1, 1, 1))
    layers = {layer.name: layer for layer in measure_cost(spec, input_size=(3, 8, 8)).layers}
    # layer2.0: 4 -> 8 channels, stride 2 on conv1 and on the 1x1 projection: 8x8 -> 4x4
    assert layers["layer2.0.conv1"].flops == conv_flops(3, 4, 8, 4, 4)
    assert layers["layer2.0.conv2"].flops == conv_flops(3, 8, 8, 4, 4)
    assert layers["layer2.0.downsample.0"].flops == conv_flops(1, 4, 8, 4, 4)


def test_params_total_and_per_layer_names_are_module_names():
    model = build_model(resnet_spec(18, num_classes=10, width_multiplier=0.25))
    report = measure_cost(model, input_size=(3, 32, 32))
    assert report.params == sum(p.numel() for p in model.parameters())
    assert sum(layer.params for layer in report.layers) == report.params
    names = dict(model.named_modules())
    assert all(layer.name in names for layer in report.layers)
    assert {"conv1", "bn1", "layer1.0.conv1", "layer4.1.bn2", "fc"} <= {layer.name for layer in report.layers}


def test_resnet50_matches_timms_published_figures():
    report = measure_cost(resnet_spec(50, num_classes=1000), input_size=(3, 224, 224))
    assert report.params == 25_557_032  # timm: 25.6 M
    assert report.macs / 1e9 == pytest.approx(4.1, rel=0.02)  # timm: 4.1 GMACs
    assert report.flops == 2 * report.macs


def test_a_spec_and_its_built_model_cost_the_same():
    spec = resnet_spec(50, num_classes=10, stem="cifar", width_multiplier=0.125)
    from_spec = measure_cost(spec, input_size=(3, 32, 32))
    from_model = measure_cost(build_model(spec), input_size=(3, 32, 32))
    assert from_spec == from_model


class NeedsRealTensors(nn.Module):
    """A forward meta tensors cannot run (it reads a value), and a container holding a parameter itself."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.scale = nn.Parameter(torch.ones(4, 1, 1))

    def forward(self, x):
        x = self.conv(x) * self.scale
        return x * float(x.abs().max().item() >= 0)


def test_a_forward_meta_cannot_run_falls_back_to_a_real_one():
    report = measure_cost(NeedsRealTensors(), input_size=(3, 8, 8))
    layers = {layer.name: layer for layer in report.layers}
    assert layers["conv"].flops == conv_flops(3, 3, 4, 8, 8)
    assert layers["NeedsRealTensors"].params == 4  # the root's own parameter is listed under its class name
    assert sum(layer.params for layer in report.layers) == report.params == 3 * 4 * 9 + 4


def test_report_serialises_with_macs():
    data = measure_cost(nash_start_spec(widths=(4, 8, 16)), input_size=(3, 8, 8)).to_dict()
    assert data["macs"] * 2 == data["flops"] and data["layers"][0]["macs"] * 2 == data["layers"][0]["flops"]
    assert data["input_size"] == [3, 8, 8]


def test_measuring_leaves_the_module_alone():
    model = build_model(nash_start_spec(widths=(4, 8, 16))).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    measure_cost(model, input_size=(3, 8, 8))
    assert model.training and all(m.training for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    after = model.state_dict()
    assert all(after[k].device.type == "cpu" and torch.equal(after[k], v) for k, v in before.items())


def test_wrong_input_size_is_a_clear_error():
    with pytest.raises(SpecError, match="3 channels"):
        measure_cost(resnet_spec(18, in_channels=1), input_size=(3, 32, 32))
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        measure_cost(resnet_spec(18), input_size=(32, 32))

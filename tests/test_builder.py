"""build_model: the parameter counts the papers quote, and state dicts that interchange with timm."""

from dataclasses import replace

import pytest
import timm
import torch

from search_spaces import build_model, nash_start_spec, resbuilder_start_spec, resnet_spec
from search_spaces.spec import ArchSpec, BlockSpec, StageSpec


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("depth,timm_name", [(50, "resnet50"), (18, "resnet18")])
def test_resnet_state_dict_loads_strictly_into_timm_with_identical_logits(depth, timm_name):
    torch.manual_seed(0)
    ours = build_model(resnet_spec(depth, num_classes=10)).eval()
    reference = timm.create_model(timm_name, num_classes=10, pretrained=False).eval()
    reference.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(ours(x), reference(x))
    assert n_params(ours) == n_params(reference)


def test_resnet50_has_the_papers_parameter_count():
    assert n_params(build_model(resnet_spec(50, num_classes=10))) == 23_528_522


def test_one_5x5_middle_conv_in_layer3_gives_presnet50_m():
    spec = resnet_spec(50, num_classes=10)
    spec = spec.replace_block(3, 2, replace(spec.stages[2].blocks[2], kernel_size=5))
    assert n_params(build_model(spec)) == 24_577_098  # the paper's PResNet-50-m, 24.58M


def test_timm_module_names():
    names = dict(build_model(resnet_spec(50, num_classes=10)).named_modules())
    for name in ("conv1", "bn1", "layer3.2.conv2", "layer4.0.downsample.0", "fc"):
        assert name in names


@pytest.mark.parametrize("activation,layer", [("relu", torch.nn.ReLU), ("leaky_relu", torch.nn.LeakyReLU), ("mish", torch.nn.Mish)])
def test_block_activation_and_kernel_are_built(activation, layer):
    spec = resnet_spec(50, num_classes=10, width_multiplier=0.125)
    spec = spec.replace_block(4, 1, replace(spec.stages[3].blocks[1], kernel_size=5, activation=activation))
    block = build_model(spec).layer4[1]
    assert block.conv2.kernel_size == (5, 5)
    assert all(isinstance(getattr(block, f"act{i}"), layer) for i in (1, 2, 3))


def test_start_nets_of_resbuilder_and_nash_build_and_run():
    x = torch.randn(2, 3, 32, 32)
    rb = build_model(resbuilder_start_spec(num_classes=10))
    assert rb(x).shape == (2, 10)
    assert [type(m).__name__ for m in rb.children()][:3] == ["Conv2d", "BatchNorm2d", "ReLU"]
    assert hasattr(rb.layer1, "pool") and hasattr(rb.layer2, "pool")
    nash = build_model(nash_start_spec(num_classes=10))
    assert nash(x).shape == (2, 10)
    convs = [m for m in nash.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 3


def test_uneven_widths_and_empty_stages_forward_and_backward():
    spec = resbuilder_start_spec(num_classes=5, width=8)
    stage = StageSpec(
        pool="max",
        blocks=(
            BlockSpec("basic", (5, 8), kernel_size=3, activation="mish"),
            BlockSpec("basic", (3, 12), kernel_size=5, activation="leaky_relu", projection=True),
        ),
    )
    spec = replace(spec, stages=(stage, StageSpec(pool="avg")))
    model = build_model(spec)
    out = model(torch.randn(3, 3, 16, 16))
    out.sum().backward()
    assert out.shape == (3, 5)
    assert all(p.grad is not None for p in model.parameters())
    assert [info["num_chs"] for info in model.feature_info] == [8, 12, 12]
    assert [info["reduction"] for info in model.feature_info] == [1, 2, 4]


def test_feature_info_reductions_of_resnet50():
    model = build_model(resnet_spec(50, num_classes=10))
    assert [i["reduction"] for i in model.feature_info] == [2, 4, 8, 16, 32]
    assert [i["module"] for i in model.feature_info] == ["act1", "layer1", "layer2", "layer3", "layer4"]


def rb0_with_resbuilder_block(width: int = 6) -> ArchSpec:
    spec = resbuilder_start_spec(num_classes=5, width=width)
    stage = replace(spec.stages[0], blocks=(BlockSpec("resbuilder", (4, width)),))
    return replace(spec, stem=replace(spec.stem, activation="leaky_relu"), stages=(stage, spec.stages[1]))


def test_the_resbuilder_block_is_x_plus_relu_bn_conv_relu_bn_conv_with_timm_names():
    spec = rb0_with_resbuilder_block()
    model = build_model(spec, zero_init_last=False).eval()
    block = model.get_submodule("layer1.0")
    assert [name for name, _ in block.named_children()] == ["conv1", "bn1", "act1", "conv2", "bn2", "act2"]
    basic = replace(spec, stages=(replace(spec.stages[0], blocks=(BlockSpec("basic", (4, 6)),)), spec.stages[1]))
    assert build_model(basic).state_dict().keys() == model.state_dict().keys()  # same layers, same keys
    x = torch.randn(3, 6, 8, 8)  # with negative entries, which a ReLU after the sum would clip
    relu = torch.nn.functional.relu
    with torch.no_grad():
        hand = x + relu(block.bn2(block.conv2(relu(block.bn1(block.conv1(x))))))
        assert torch.equal(block(x), hand)
        assert not torch.equal(block(x), relu(hand))


def test_a_resbuilder_branch_with_zero_bn2_is_the_identity_and_a_fresh_one_trains():
    spec = rb0_with_resbuilder_block()
    block = build_model(spec, zero_init_last=False).get_submodule("layer1.0").eval()
    torch.nn.init.zeros_(block.bn2.weight)
    x = torch.randn(3, 6, 8, 8)
    with torch.no_grad():
        assert torch.equal(block(x), x)
    # zero_init_last (the default) must not zero bn2 here: ReLU'(0) = 0 would leave the branch untrainable
    model = build_model(spec)
    assert torch.equal(model.get_submodule("layer1.0.bn2").weight, torch.ones(6))
    out = model(torch.randn(2, 3, 16, 16))
    out.sum().backward()
    assert out.shape == (2, 5)
    for name in ("conv1", "bn1", "conv2", "bn2"):
        assert model.get_submodule(f"layer1.0.{name}").weight.grad.abs().sum() > 0, name

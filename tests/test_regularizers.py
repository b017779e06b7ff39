"""ResBuilder's loss terms: LayerLasso and MorphNet's FLOP penalty against hand computation, their gradients,
and a few Lightning steps with both terms on."""

from dataclasses import replace

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from search_spaces import BlockSpec, build_model, measure_cost, nash_start_spec, resbuilder_start_spec, resnet_spec
from trainers.regularizers import (
    MorphNetPenalty,
    alive_widths,
    layer_lasso,
    layer_lasso_term,
    morphnet_penalty,
    morphnet_term,
)
from trainers.system import ClassificationSystem, OptimConfig


pytestmark = pytest.mark.usefixtures("one_thread_and_seeded")


def rb0_with_one_block(width: int = 4, in_channels: int = 2, num_classes: int = 3, kind: str = "basic"):
    spec = resbuilder_start_spec(num_classes=num_classes, width=width, in_channels=in_channels)
    first = replace(spec.stages[0], blocks=(BlockSpec(kind, (width, width)),))
    return replace(spec, stages=(first, spec.stages[1]))


def tiny_resnet18(**kwargs):
    return resnet_spec(18, num_classes=10, stem="cifar", width_multiplier=0.125, **kwargs)


@pytest.mark.parametrize("kind", ["basic", "resbuilder"])
def test_layer_lasso_is_the_l1_of_the_residual_convs_only(kind):
    model = build_model(rb0_with_one_block(kind=kind))
    block = model.get_submodule("layer1.0")  # layer1[0] would be the pool
    hand = block.conv1.weight.abs().sum() + block.conv2.weight.abs().sum()
    assert torch.equal(layer_lasso(model), hand)

    model = build_model(tiny_resnet18(stage_depths=(1, 1, 1, 1)))
    state = model.state_dict()
    hand = sum(
        tensor.abs().sum() for key, tensor in state.items()
        if key.startswith("layer") and key.split(".")[2] in ("conv1", "conv2")  # not downsample.0
    )
    assert torch.allclose(layer_lasso(model), hand)
    assert any("downsample.0" in key for key in state)

    assert float(layer_lasso(build_model(nash_start_spec(widths=(4, 4, 4))))) == 0.0  # conv blocks only
    assert float(layer_lasso(build_model(resbuilder_start_spec(width=4)))) == 0.0


def set_gammas(model, gammas: dict[str, list[float]]) -> None:
    with torch.no_grad():
        for name, values in gammas.items():
            model.get_submodule(name).weight.copy_(torch.tensor(values))


@pytest.mark.parametrize("kind", ["basic", "resbuilder"])  # the same convs, BNs and groups
def test_morphnet_penalty_by_hand_with_a_tied_stream_and_dead_channels(kind):
    # input 2 x 8 x 8 -> stem conv 3x3 (8x8) -> pool (4x4) -> block 3x3, 3x3 -> pool (2x2) -> fc to 3 classes
    model = build_model(rb0_with_one_block(kind=kind))
    set_gammas(model, {
        "bn1": [1.0, 0.5, 0.001, -0.2],
        "layer1.0.bn2": [0.001, 0.7, 0.002, 0.003],  # added onto the stem's channels: one group
        "layer1.0.bn1": [0.3, 0.005, 0.0, 2.0],
    })
    c_stem, c_block, c_fc = 2 * 9 * 8 * 8, 2 * 9 * 4 * 4, 2 * 1 * 1

    def formula(stream_sum, stream_alive, inner_sum, inner_alive):
        return (
            c_stem * (0 * stream_alive + 2 * stream_sum)  # image: no scales, 2 channels
            + c_block * (stream_sum * inner_alive + stream_alive * inner_sum)  # conv1
            + c_block * (inner_sum * stream_alive + inner_alive * stream_sum)  # conv2
            + c_fc * (stream_sum * 3 + stream_alive * 0)  # logits: no scales, 3 classes
        )

    # per channel max |gamma| over the stream: [1, 0.7, 0.002, 0.2]
    stream_sum, inner_sum = 1.0 + 0.7 + 0.002 + 0.2, 0.3 + 0.005 + 0.0 + 2.0
    penalty = MorphNetPenalty(model.arch_spec, (2, 8, 8), threshold=1e-2)
    expected = formula(stream_sum, 3, inner_sum, 2)
    assert penalty(model).item() == pytest.approx(expected, rel=1e-6)
    assert morphnet_penalty(model, (2, 8, 8), 1e-2).item() == pytest.approx(expected, rel=1e-6)
    assert alive_widths(model, 1e-2) == {"bn1": 3, "layer1.0.bn1": 2}

    low = MorphNetPenalty(model.arch_spec, (2, 8, 8), threshold=1e-3)  # 0.002 and 0.005 come alive
    assert low(model).item() == pytest.approx(formula(stream_sum, 4, inner_sum, 3), rel=1e-6)


@pytest.mark.parametrize("spec, input_size", [
    (tiny_resnet18(), (3, 16, 16)),
    (resnet_spec(50, num_classes=7, width_multiplier=0.0625, stage_depths=(1, 2, 1, 1)), (3, 32, 32)),
    (nash_start_spec(widths=(4, 6, 8)), (3, 12, 12)),
    (rb0_with_one_block(width=6, in_channels=3, kind="resbuilder"), (3, 12, 12)),
])
def test_with_every_gamma_one_the_penalty_is_twice_the_flops(spec, input_size):
    # each conv counts C * c_in * c_out twice, except the stem (image side has no scales) and the fc
    model = build_model(spec, zero_init_last=False)
    report = measure_cost(spec, input_size)
    layers = {layer.name: layer.flops for layer in report.layers}
    penalty = MorphNetPenalty(spec, input_size)
    assert penalty(model).item() == pytest.approx(2 * report.flops - layers["conv1"] - layers["fc"], rel=1e-6)
    assert penalty.alive_flops(model) == report.flops


def test_gradients_reach_every_bn_weight():
    model = build_model(tiny_resnet18(stage_depths=(1, 1, 1, 1)), zero_init_last=False)
    penalty = MorphNetPenalty(model.arch_spec, (3, 16, 16))
    penalty(model).backward()
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            assert module.weight.grad is not None and module.weight.grad.abs().sum() > 0, name


@pytest.mark.filterwarnings("ignore:You defined a `validation_step`")
def test_both_terms_train_inside_the_classification_system():
    spec = rb0_with_one_block(width=4, in_channels=3, num_classes=3)
    model = build_model(spec, zero_init_last=False)
    terms = [layer_lasso_term(1e-3), morphnet_term(1e-6, spec, (3, 8, 8), 1e-2)]
    system = ClassificationSystem(model, OptimConfig(optimizer="adam", lr=1e-2, schedule="none"), 1, terms)
    generator = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(32, 3, 8, 8, generator=generator), torch.randint(0, 3, (32,), generator=generator))
    before = {name: value(model).item() for name, value in terms}
    gamma_before = model.bn1.weight.detach().clone()
    trainer = pl.Trainer(max_steps=4, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(system, DataLoader(data, batch_size=8))
    assert trainer.global_step == 4
    assert set(trainer.callback_metrics) >= {"train_layer_lasso", "train_morphnet"}
    after = {name: value(model).item() for name, value in terms}
    assert after["layer_lasso"] != before["layer_lasso"] and after["morphnet"] != before["morphnet"]
    assert not torch.equal(model.bn1.weight.detach(), gamma_before)

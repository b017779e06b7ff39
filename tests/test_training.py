"""The Lightning system: learning really happens, schedules follow their curves, extra terms add exactly,
and a NaN loss stops with the fix named."""

import math

import pytest
import torch
from torch import nn

from search_spaces import build_model, resnet_spec
from trainers import OptimConfig, TrainingDivergedError, evaluate, fit, load_checkpoint, make_datamodule
from trainers.system import ClassificationSystem, make_optimizer, make_scheduler


def test_a_small_resnet_learns_digits_to_90_percent(tmp_path):
    torch.set_num_threads(1)
    datamodule = make_datamodule("digits", image_size=16, batch_size=64, seed=0)
    model = build_model(resnet_spec(18, num_classes=10, stem="cifar", width_multiplier=0.25, in_channels=1))
    seen = []
    result = fit(model, datamodule, OptimConfig(optimizer="adam", lr=3e-3), epochs=5,
                 on_epoch_end=lambda epoch, metrics: seen.append(epoch), checkpoint_path=tmp_path / "model.ckpt")
    assert result.final_val_accuracy >= 0.90
    assert seen == [1, 2, 3, 4, 5] and len(result.history) == 5
    assert evaluate(model, datamodule, "test")["accuracy"] >= 0.85
    saved = load_checkpoint(tmp_path / "model.ckpt")
    assert saved["arch_spec"] == model.arch_spec.to_json()


def lr_curve(config: OptimConfig, epochs: int) -> list[float]:
    optimizer = make_optimizer([nn.Parameter(torch.zeros(1))], config)
    scheduler = make_scheduler(optimizer, config, epochs)
    curve = []
    for _ in range(epochs):
        curve.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return curve


def test_sgdr_restarts_after_its_period():
    curve = lr_curve(OptimConfig(lr=0.05, schedule="sgdr", sgdr_period=4, lr_min=0.0), 9)
    assert curve[0] == curve[4] == curve[8] == pytest.approx(0.05)  # restarts at 4 and 8
    assert curve[2] == pytest.approx(0.025)  # half way down the cosine
    assert curve[3] < curve[2] < curve[1] < curve[0]


def test_cosine_and_step_schedules():
    cosine = lr_curve(OptimConfig(lr=1.0, schedule="cosine"), 4)
    assert cosine == pytest.approx([1.0, 0.5 * (1 + math.cos(math.pi / 4)), 0.5, 0.5 * (1 + math.cos(3 * math.pi / 4))])
    step = lr_curve(OptimConfig(lr=1.0, schedule="step", milestones=(2,), gamma=0.1), 4)
    assert step == pytest.approx([1.0, 1.0, 0.1, 0.1])


def test_unknown_optimizer_or_schedule_lists_the_valid_ones():
    with pytest.raises(ValueError, match="use one of sgd, adam"):
        OptimConfig(optimizer="rmsprop")
    with pytest.raises(ValueError, match="use one of none, cosine, sgdr, step"):
        OptimConfig(schedule="onecycle")


def test_an_extra_loss_term_adds_exactly_its_value():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    penalty = lambda m: 0.5 * m[1].weight.abs().sum()  # noqa: E731 - a LayerLasso-shaped term
    plain = ClassificationSystem(model, OptimConfig(), 1)
    regularised = ClassificationSystem(model, OptimConfig(), 1, extra_losses=[("lasso", penalty)])
    logits, labels = model(torch.randn(5, 4)), torch.randint(0, 3, (5,))
    with_term = regularised.loss_terms(logits, labels)
    without = plain.loss_terms(logits, labels)
    assert set(with_term) == {"cross_entropy", "lasso"}
    torch.testing.assert_close(with_term["lasso"], penalty(model))
    torch.testing.assert_close(with_term["cross_entropy"], without["cross_entropy"])


def one_step_with_zero_gradients(model: nn.Module, config: OptimConfig) -> dict[str, torch.Tensor]:
    """Per parameter, how much one optimiser step changed it when the loss gradient is zero: only decay acts."""
    optimizer = ClassificationSystem(model, config, 1).configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    before = {name: parameter.detach().clone() for name, parameter in model.named_parameters()}
    for parameter in model.parameters():
        parameter.grad = torch.zeros_like(parameter)
    optimizer.step()
    return {name: (parameter.detach() - before[name]).abs().max() for name, parameter in model.named_parameters()}


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_kernel_only_weight_decay_spares_batch_norm_and_biases(optimizer):
    """ResBuilder's lambda_0 is a Keras kernel regulariser: conv and dense kernels decay, BN scales (which the
    MorphNet term reads) and biases do not; "all" (the default) decays everything, as before."""
    model = build_model(resnet_spec(18, num_classes=3, stem="cifar", width_multiplier=0.0625, stage_depths=(1, 1)))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):  # nonzero BN weights and biases, so decay would show
                module.weight.fill_(0.5), module.bias.fill_(0.25)
    config = dict(optimizer=optimizer, lr=0.1, momentum=0.0, weight_decay=0.1, schedule="none")
    changed = one_step_with_zero_gradients(model, OptimConfig(**config, weight_decay_on="kernels"))
    modules = dict(model.named_modules())
    kernels = {name for name in changed if name.endswith(".weight")
               and isinstance(modules[name.rsplit(".", 1)[0]], (nn.Conv2d, nn.Linear))}
    assert {"conv1.weight", "layer1.0.conv2.weight", "layer2.0.downsample.0.weight", "fc.weight"} <= kernels
    assert all(changed[name] > 0 for name in kernels)
    assert all(changed[name] == 0 for name in changed.keys() - kernels), sorted(changed.keys() - kernels)
    everything = one_step_with_zero_gradients(model, OptimConfig(**config))
    assert all(value > 0 for value in everything.values())


def test_an_unknown_weight_decay_target_lists_the_valid_ones():
    with pytest.raises(ValueError, match="use one of all, kernels"):
        OptimConfig(weight_decay_on="bn")


class Exploding(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(256, 10)

    def forward(self, x):
        return self.fc(x.flatten(1)) * float("nan")


def test_a_nan_loss_stops_with_the_fix_named_and_keeps_earlier_checkpoints(tmp_path):
    checkpoint = tmp_path / "model.ckpt"
    checkpoint.write_bytes(b"earlier result")
    datamodule = make_datamodule("digits", image_size=16, batch_size=64)
    with pytest.raises(TrainingDivergedError, match=r"became nan at epoch 0 step 0; lower the learning rate \(0.05\)"):
        fit(Exploding(), datamodule, OptimConfig(), epochs=1, checkpoint_path=checkpoint)
    assert checkpoint.read_bytes() == b"earlier result"


def test_evaluate_restores_every_modules_mode_and_keeps_no_graph():
    # Lightning keeps a submodule's mode through fit: a network left in eval mode would train with frozen BatchNorm.
    from types import SimpleNamespace

    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                                torch.nn.LazyLinear(3))
    model(torch.zeros(2, 1, 6, 6))
    model[1].eval()  # a deliberately frozen BN stays frozen, the rest stays in training mode
    batches = [(torch.randn(4, 1, 6, 6), torch.randint(0, 3, (4,)))]
    result = evaluate(model, SimpleNamespace(val_dataloader=lambda: batches, test_dataloader=lambda: []), split="val")
    assert result["samples"] == 4 and model.training and model[0].training and not model[1].training

"""ProxylessStrategy: resnas's binary-gate ProxylessNAS through NNI 3.0's Python API,
`NasExperiment(space, evaluator, ProxylessStrategy()).run()`.

The contract: on any ModelSpace of LayerChoices and Repeats, one run trains in-process with NNI's own
Classification evaluator, and `export_top_models(top_k=k)` gives k distinct valid samples of the space, most
probable first, the argmax first; an exported instance is the supernet's path (NNI's frozen layout and names).
NasExperiment runs a one-shot strategy on the sequential engine: no NNI manager, no port, nothing to stop but
the experiment (its manifest is redirected to tmp_path). Kept tiny for CI: 8 random 16x16 images, 2 batches.
"""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from search_spaces import ScopedResNet50, build_model
from strategies.proxyless import ProxylessStrategy
from strategies.proxyless.binary_gates import install_binary_gates
from nni_evaluator import classification

TINY = dict(width_multiplier=1 / 16, stem="cifar", num_classes=10)
# One thread: on the busy 2-core CI machine two OpenMP threads make these tiny steps 5-10x slower.
pytestmark = pytest.mark.usefixtures("one_thread_and_seeded")




def search(space, strategy, home) -> tuple[list[dict], nn.Module]:
    """The top 3 samples and the first one's instance, from a NasExperiment run."""
    from nni.nas.experiment import NasExperiment

    experiment = NasExperiment(space, classification(), strategy)
    experiment.config.experiment_working_directory = str(home)
    try:
        experiment.run()
        return (experiment.export_top_models(top_k=3, formatter="dict"),
                experiment.export_top_models(top_k=1, formatter="instance")[0])
    finally:
        experiment.stop()


def assert_ranked(strategy: ProxylessStrategy, exported: list[dict]) -> None:
    """3 distinct samples, the argmax first, by non-increasing product of their gate probabilities."""
    probabilities = strategy.export_probs()
    products = [math.prod(probabilities[label][sample[label]] for label in probabilities) for sample in exported]
    assert len({json.dumps(sample, sort_keys=True) for sample in exported}) == len(exported) == 3
    assert exported[0] == strategy.bank.argmax_sample()
    assert all(first >= second for first, second in zip(products, products[1:])), products
    assert [ranked.probability for ranked in strategy.top_architectures(3)] == pytest.approx(products, rel=1e-9)
    assert any(bool(alpha.detach().abs().max() > 0) for alpha in strategy.bank.alpha.values())  # the gates moved
    trainer = strategy.oneshot_module.trainer
    assert trainer.global_step == 4  # Lightning counted 2 batches x (weight step + architecture step)
    (model,) = strategy.engine.list_models()
    assert isinstance(model.metric, float)  # the evaluator's val_acc reached NNI's engine


def test_scoped_resnet50_through_nas_experiment(nni_home):
    space, reference = ScopedResNet50("s", **TINY), ScopedResNet50("s", **TINY)  # the run gates `space` in place
    strategy = ProxylessStrategy(arch_lr=0.05)
    exported, instance = search(space, strategy, nni_home)
    assert_ranked(strategy, exported)
    for sample in exported:
        assert reference.check_contains(sample) is None
        reference.to_spec(sample)  # SpecError if not a sample of the scope
    # The instance is the argmax path with the supernet's weights, in NNI's frozen layout and timm's names.
    build_model(reference.to_spec(exported[0])).load_state_dict(instance.state_dict(), strict=True)
    x = torch.randn(2, 3, 16, 16)
    strategy.bank.resample("argmax")
    with torch.no_grad():
        torch.testing.assert_close(instance.eval()(x), strategy.supernet.eval()(x))


def hub_space():
    """NNI's own ProxylessNAS space (MobileNetV2 blocks, 5 Repeats of LayerChoices) at 8-16 channels."""
    from nni.nas.hub.pytorch import ProxylessNAS

    return ProxylessNAS(num_labels=10, base_widths=(16,) * 8 + (32,), width_mult=0.5)


def test_nni_hub_proxylessnas_space_through_nas_experiment(nni_home):
    space, reference = hub_space(), hub_space()
    strategy = ProxylessStrategy(arch_lr=0.05)
    exported, instance = search(space, strategy, nni_home)
    assert_ranked(strategy, exported)
    assert any(bool(strategy.bank.alpha[f"s{stage}_depth"].abs().max() > 0) for stage in range(2, 7))
    from nni.nas.space import model_context

    networks = []
    for sample in exported:
        assert reference.check_contains(sample) is None
        with model_context(sample):  # what freeze builds, without first copying every candidate of `reference`
            networks.append(hub_space())
    assert len({repr(network) for network in networks}) == 3  # distinct networks, not only distinct dicts
    networks[0].load_state_dict(instance.state_dict(), strict=True)
    assert networks[0](torch.randn(2, 3, 16, 16)).shape == (2, 10)


def nested_space():
    """A LayerChoice inside a candidate, a Repeat (min depth 0) of LayerChoices, and a plain LayerChoice."""
    from nni.nas.nn.pytorch import LayerChoice, ModelSpace, Repeat

    class Nested(ModelSpace):
        def __init__(self):
            super().__init__()
            inner = LayerChoice({"relu": nn.ReLU(), "tanh": nn.Tanh()}, label="inner")
            self.stem = LayerChoice({"plain": nn.Conv2d(2, 2, 1), "nested": nn.Sequential(inner, nn.Conv2d(2, 2, 3, padding=1))},
                                    label="stem")
            self.body = Repeat(lambda index: LayerChoice(
                {"k1": nn.Conv2d(2, 2, 1), "k3": nn.Conv2d(2, 2, 3, padding=1)}, label=f"block{index}"),
                (0, 2), label="depth")
            self.act = LayerChoice({"relu": nn.ReLU(), "sigmoid": nn.Sigmoid()}, label="act")

        def forward(self, x):
            return self.act(self.body(self.stem(x)))

    return Nested()


def test_top_k_is_the_brute_force_ranking_of_distinct_networks():
    """Against NNI's own freeze: every full sample scored by its product, a network by its best sample."""
    space, reference = nested_space(), nested_space()
    strategy = ProxylessStrategy()
    strategy.mutate_model(space)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for alpha in strategy.bank.alpha.values():
            alpha.copy_(torch.randn(alpha.shape, generator=generator))
    probabilities = strategy.export_probs()
    best: dict[str, float] = {}
    for values in itertools.product(*(list(choices) for choices in probabilities.values())):
        sample = dict(zip(probabilities, values))
        network = repr(reference.freeze(sample))
        best[network] = max(best.get(network, 0.0), math.prod(probabilities[label][sample[label]] for label in sample))
    ranked = strategy.top_architectures(len(best) + 5)  # more than the space holds: all of them come back
    assert len(ranked) == len(best) == 3 * (1 + 2 + 4) * 2  # stems x depth-0/1/2 bodies x activations
    assert ranked[0].sample == strategy.bank.argmax_sample()
    assert [r.probability for r in ranked] == pytest.approx(sorted(best.values(), reverse=True), rel=1e-9)
    for r in ranked:
        assert r.probability == pytest.approx(best[repr(reference.freeze(r.sample))], rel=1e-9)


def test_repeat_gate_forward_is_the_path_and_its_gradient_the_binary_gate_estimator():
    from nni.nas.nn.pytorch import ModelSpace, Repeat

    class Deep(ModelSpace):
        def __init__(self):
            super().__init__()
            self.body = Repeat(lambda index: nn.Sequential(nn.Linear(3, 3), nn.Tanh()), (0, 3), label="depth")
            self.head = nn.Linear(3, 2)

        def forward(self, x):
            return self.head(self.body(x))

    torch.manual_seed(0)
    model = Deep()
    bank = install_binary_gates(model)
    bank.estimator = "full"
    with torch.no_grad():
        bank.alpha["depth"].normal_()
    x, y = torch.randn(5, 3), torch.randint(0, 2, (5,))
    bank.resample("arch", torch.Generator().manual_seed(1))
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    F.cross_entropy(model(x), y).backward()

    blocks = model.body.blocks
    outputs = [x]
    for block in blocks:
        outputs.append(block(outputs[-1]))
    active = outputs[bank.active["depth"]].clone().requires_grad_(True)
    torch.testing.assert_close(model(x), model.head(active))  # the value is the active depth's path
    (grad_out,) = torch.autograd.grad(F.cross_entropy(model.head(active), y), active)
    binary = torch.stack([(grad_out * output).sum() for output in outputs])
    probs = torch.softmax(bank.alpha["depth"].detach(), 0)
    torch.testing.assert_close(bank.alpha["depth"].grad, probs * (binary - (binary * probs).sum()), rtol=1e-5, atol=1e-7)


def test_unsupported_choices_and_settings_are_one_clear_error():
    import nni
    from nni.nas.nn.pytorch import InputChoice, LayerChoice, ModelSpace, Repeat

    class WithInputChoice(ModelSpace):
        def __init__(self):
            super().__init__()
            self.conv = LayerChoice({"a": nn.Conv2d(2, 2, 1), "b": nn.Conv2d(2, 2, 3, padding=1)}, label="conv")
            self.pick = InputChoice(2, 1, label="pick")

    class ExpressionDepth(ModelSpace):
        def __init__(self):
            super().__init__()
            self.body = Repeat(nn.Linear(2, 2), nni.choice("half", [1, 2]) * 2)

    with pytest.raises(ValueError, match="LayerChoices and Repeats only.*pick"):
        ProxylessStrategy().mutate_model(WithInputChoice())
    with pytest.raises(ValueError, match="one choice"):
        ProxylessStrategy().mutate_model(ExpressionDepth())
    gated = ProxylessStrategy().mutate_model(nested_space())
    with pytest.raises(ValueError, match="build a fresh space"):
        ProxylessStrategy().mutate_model(gated)
    with pytest.raises(ValueError, match="give input_size"):
        ProxylessStrategy(flops_penalty=0.1)
    with pytest.raises(TypeError, match="no setting total_epochs"):
        ProxylessStrategy(total_epochs=3)
    with pytest.raises(ValueError, match="two_path or full"):
        ProxylessStrategy(gradient_estimator="three_path")

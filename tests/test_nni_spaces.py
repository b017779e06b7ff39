"""NNI model spaces: labels, samples, to_spec and the one-shot / multi-trial strategies of NNI 3.0.

The contract: for any sample an NNI strategy can produce, `build_model(space.to_spec(sample))` *is* the path
the supernet computed for that sample (same module names, same weights -> same logits).

NNI quirks these tests pin down (NNI 3.0 with torch 2.14 / pytorch-lightning 2.6):
- `space.random(memo=sample)` fills `sample` in place and returns the frozen model (NNI's mutable API);
  `space.freeze(sample)` deep-copies the supernet path, weights included.
- One-shot strategies mutate the space *in place* into a supernet; build a fresh space for each run.
- `NasExperiment.run()` with a one-shot strategy picks the sequential engine itself: no web manager, no
  port. It still writes a manifest under ~/nni-experiments (`Experiments()`), redirected here to tmp_path.
- Multi-trial strategies also run in-process with `NasExperimentConfig('sequential', 'simplified')`, but the
  sequential engine reuses the evaluator's Lightning Trainer for every trial, and a Trainer that has reached
  max_epochs skips the next `fit` (PL 2.x): trial 2 then fails with KeyError 'train_acc'. A
  FunctionalEvaluator that builds a fresh `Classification` per trial avoids it.
- `Proxyless.export()` samples from the gates (not argmax) and adds its own per-block keys
  ("layer2_depth/in_repeat_1") beside a Repeat's depth label; `to_spec` ignores keys it does not own.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from search_spaces import SCOPES, ArchSpec, DepthResNet, ScopedResNet50, SpecError, build_model, resnet_spec
from nni_evaluator import classification

TINY = dict(width_multiplier=1 / 16, stem="cifar", num_classes=10)
STAGE_CHANNELS = {1: 64, 2: 128, 3: 256, 4: 512}  # middle-conv width c of a ResNet-50 stage


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def tiny_spaces() -> dict[str, Callable[[], torch.nn.Module]]:
    return {
        "scoped_s": lambda: ScopedResNet50("s", **TINY),
        "scoped_f": lambda: ScopedResNet50("f", **TINY),
        # layer1 keeps its shape (4 -> 4 channels, stride 1), so it may be empty.
        "depth_basic": lambda: DepthResNet(((0, 2), (1, 3), (2, 2)), block="basic", widths=(4, 8, 8)),
        "depth_bottleneck": lambda: DepthResNet(((1, 2), (1, 2)), block="bottleneck", widths=(4, 8)),
    }


@torch.no_grad()
def scramble(module: torch.nn.Module, seed: int) -> None:
    """Perturb every weight and BN statistic, so zero-init BNs cannot hide a wrong kernel or activation."""
    generator = torch.Generator().manual_seed(seed)
    for parameter in module.parameters():
        parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))
    for name, buffer in module.named_buffers():
        if name.endswith("running_mean"):
            buffer.copy_(0.1 * torch.randn(buffer.shape, generator=generator))
        elif name.endswith("running_var"):
            buffer.copy_(0.5 + torch.rand(buffer.shape, generator=generator))


# ---- ScopedResNet50: the paper's numbers -----------------------------------------------------------------
def meta_params(spec: ArchSpec) -> int:
    with torch.device("meta"):  # full-width ResNet-50s, counted without allocating or initialising weights
        return n_params(build_model(spec))


def uniform_sample(space: ScopedResNet50, kernel: str, activation: str = "relu") -> dict:
    return {label: kernel if label.endswith("_kernel") else activation for label, _ in space.choice_labels()}


def test_scoped_resnet50_has_the_papers_parameter_counts():
    with torch.device("meta"):
        space = ScopedResNet50("f", num_classes=10, stem="imagenet")
    plain = space.to_spec(uniform_sample(space, "k3"))
    assert plain == resnet_spec(50, num_classes=10)
    assert meta_params(plain) == 23_528_522

    one_k5 = space.to_spec({**uniform_sample(space, "k3"), "layer3_2_kernel": "k5"})
    assert meta_params(one_k5) == 23_528_522 + 16 * 256**2 == 24_577_098

    all_k5 = uniform_sample(space, "k5", "mish")
    extra = sum(16 * STAGE_CHANNELS[stage] ** 2 * len(space.base_spec.stages[stage - 1].blocks) for stage in SCOPES["f"])
    assert meta_params(space.to_spec(all_k5)) == 23_528_522 + extra
    with torch.device("meta"):
        assert n_params(space.freeze(all_k5)) == 23_528_522 + extra  # the supernet path itself


@pytest.mark.parametrize("scope,blocks", [("s", 3), ("m", 9), ("l", 13), ("f", 16)])
def test_every_scope_has_two_labelled_decisions_per_searched_block(scope, blocks):
    space = ScopedResNet50(scope, **TINY)
    labels = space.choice_labels()
    assert len(labels) == 2 * blocks
    assert all("." not in label for label, _ in labels)  # DARTS registers labels as parameter names
    # NNI sees exactly these decisions (the three activation sites of a block merge into one label) ...
    simplified = space.simplify()
    assert {label: list(values) for label, values in labels} == {k: list(v.values) for k, v in simplified.items()}
    # ... in forward order, deepest stage last, and only inside the scope.
    stages = [int(label[len("layer")]) for label, _ in labels]
    assert stages == sorted(stages) and set(stages) == set(SCOPES[scope])
    block = space.get_submodule("layer4.2")
    assert type(block.conv2).__name__ == "LayerChoice" and block.conv2.label == "layer4_2_kernel"
    assert block.act1.label == block.act2.label == block.act3.label == "layer4_2_act"
    if scope != "f":
        assert isinstance(space.get_submodule("layer1.0.conv2"), torch.nn.Conv2d)  # outside: plain k3/ReLU


def test_unknown_scope_is_one_sentence_naming_the_scopes():
    with pytest.raises(SpecError, match=r"unknown search scope 'xl'; use one of s, m, l, f"):
        ScopedResNet50("xl")


def test_to_spec_refuses_incomplete_or_foreign_samples():
    space = ScopedResNet50("s", **TINY)
    sample = uniform_sample(space, "k5")
    with pytest.raises(SpecError, match="no value for 'layer4_0_act'"):
        space.to_spec({k: v for k, v in sample.items() if k != "layer4_0_act"})
    with pytest.raises(SpecError, match="use one of"):
        space.to_spec({**sample, "layer4_0_kernel": "k7"})
    assert space.to_spec({**sample, "unrelated/label": 1}) == space.to_spec(sample)


# ---- DepthResNet ------------------------------------------------------------------------------------------
def test_depth_space_labels_and_bounds():
    space = DepthResNet(((0, 2), (1, 3), (2, 2)), widths=(4, 8, 8))
    assert space.choice_labels() == [("layer1_depth", [0, 1, 2]), ("layer2_depth", [1, 2, 3])]  # layer3 fixed
    assert space.to_spec({"layer1_depth": 0, "layer2_depth": 3}).depths == (0, 3, 2)
    with pytest.raises(SpecError, match="layer2 changes the shape .* cannot be empty"):
        DepthResNet(((1, 2), (0, 2)), widths=(4, 8))
    with pytest.raises(SpecError, match="layer1_depth=5 is not a candidate"):
        space.to_spec({"layer1_depth": 5, "layer2_depth": 1})


# ---- every space: sample, freeze, run, export, rebuild -----------------------------------------------------
@pytest.mark.parametrize("name", list(tiny_spaces()))
@pytest.mark.parametrize("seed", [0, 1])
def test_random_sample_builds_the_same_network_as_the_supernet_path(name, seed):
    torch.manual_seed(seed)
    space = tiny_spaces()[name]()
    scramble(space, seed)
    sample: dict = {}
    frozen = space.random(memo=sample, random_state=np.random.RandomState(seed))
    assert set(sample) == {label for label, _ in space.choice_labels()}

    x, y = torch.randn(2, 3, 16, 16), torch.tensor([1, 7])
    frozen.train()
    F.cross_entropy(frozen(x), y).backward()
    assert all(p.grad is not None for p in frozen.parameters())

    spec = space.to_spec(sample)
    assert ArchSpec.from_json(spec.to_json()) == spec
    net = build_model(spec)
    assert n_params(net) == n_params(frozen)
    net.load_state_dict(frozen.state_dict(), strict=True)  # same names and shapes ...
    frozen.eval(), net.eval()
    with torch.no_grad():
        torch.testing.assert_close(net(x), frozen(x), rtol=1e-5, atol=1e-5)  # ... and the same function


def test_depth_zero_freezes_to_an_empty_stage():
    space = DepthResNet(((0, 2), (1, 2)), widths=(4, 8))
    scramble(space, 3)
    sample = {"layer1_depth": 0, "layer2_depth": 2}
    frozen, net = space.freeze(sample), build_model(space.to_spec(sample))
    assert len(frozen.layer1) == 0 and len(net.layer1) == 0
    net.load_state_dict(frozen.state_dict(), strict=True)
    frozen.eval(), net.eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(net(x), frozen(x))


# ---- NNI 3.0 strategies, in-process --------------------------------------------------------------------------


def run_experiment(space, evaluator, strategy, home, config=None) -> list[dict]:
    from nni.nas.experiment import NasExperiment

    experiment = NasExperiment(space, evaluator, strategy, config=config)
    experiment.config.experiment_working_directory = str(home)
    try:
        experiment.run()
        return experiment.export_top_models(top_k=2, formatter="dict")
    finally:
        experiment.stop()


def assert_builds(space, sample: dict) -> None:
    net = build_model(ArchSpec.from_json(space.to_spec(sample).to_json()))
    assert net(torch.randn(2, 3, 16, 16)).shape == (2, 10)


@pytest.mark.parametrize("name", ["scoped_s", "depth_basic"])
@pytest.mark.parametrize("strategy_name", ["Proxyless", "DARTS"])
def test_one_shot_strategy_searches_and_exports_a_buildable_sample(name, strategy_name, nni_home):
    from nni.nas import strategy

    space = tiny_spaces()[name]()
    reference = tiny_spaces()[name]()  # the one-shot run turns `space` into a supernet in place
    search = getattr(strategy, strategy_name)()
    exported = run_experiment(space, classification(), search, nni_home)
    assert len(exported) == 1
    assert_builds(reference, exported[0])
    oneshot = search.oneshot_module
    assert oneshot.trainer.global_step == 4  # 2 batches x (architecture step + weight step)
    if name.startswith("scoped"):
        # A shared label is one architecture parameter, not one per activation site.
        assert len(oneshot.arch_parameters()) == len(reference.choice_labels())


def test_darts_repeat_mixes_in_the_empty_stage(nni_home):
    from nni.nas import strategy

    space = DepthResNet(((0, 2), (1, 1)), widths=(4, 8))
    run_experiment(space, classification(), strategy.DARTS(), nni_home)
    mixed = space.layer1  # mutated in place
    weights = torch.softmax(mixed._arch_alpha["layer1_depth"], dim=0)
    x = torch.randn(2, 4, 8, 8)
    mixed.eval()
    with torch.no_grad():
        one = mixed.blocks[0](x)
        expected = weights[0] * x + weights[1] * one + weights[2] * mixed.blocks[1](one)
        torch.testing.assert_close(mixed(x), expected)


def test_random_strategy_runs_in_process_on_the_sequential_engine(nni_home):
    import nni
    from nni.nas import strategy
    from nni.nas.evaluator import FunctionalEvaluator
    from nni.nas.experiment import NasExperimentConfig

    config = NasExperimentConfig("sequential", "simplified")
    config.max_trial_number = 2
    trained: list[dict] = []

    def evaluate(model):
        trained.append(nni.get_current_parameter().sample)
        classification().evaluate(model)  # a fresh Trainer per trial (see the module docstring)

    space = DepthResNet(((0, 2), (1, 3)), widths=(4, 8))
    exported = run_experiment(space, FunctionalEvaluator(evaluate), strategy.Random(seed=0), nni_home, config)
    assert len(trained) == 2 and len(exported) == 2
    for sample in exported:
        assert sample in trained
        assert_builds(space, sample)

"""NNI 3.0's Python multi-trial strategies search resnas's model spaces, in-process.

The contract: `nni.nas.strategy.Random` and `RegularizedEvolution` run on `ScopedResNet50` and `DepthResNet`
through `NasExperiment` on the sequential engine (no NNI manager, no port), the way an NNI user writes it:
a FunctionalEvaluator trains the frozen model NNI hands it and calls `nni.report_final_result`. Every sample
NNI hands out is one `space.to_spec` reads: it builds the frozen model's network (same parameter names and
shapes), and `export_top_models(formatter='dict')` returns the best of them.

NNI 3.0 behaviour worth knowing (nni/nas/strategy/evolution.py, utils.py):
- RegularizedEvolution's default population_size is 100: with fewer trials it never mutates (pure random).
- Both strategies deduplicate by resampling up to 500 times; a space smaller than max_trial_number ends the
  run early with a log line (bruteforce.py:216, evolution.py:188), not an error.
- An exception in the evaluator's function propagates out of `experiment.run()` (continue_on_failure=False).

Kept tiny for CI: scikit-learn's digits (8x8, upsampled to 16 px), 2 SGD steps of 32 images per trial,
4 trials per run, one thread.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import pytest
import torch
import torch.nn.functional as F

from search_spaces import DepthResNet, ScopedResNet50, build_model

IMAGE_SIZE = 16
TRIALS = 4
pytestmark = pytest.mark.usefixtures("one_thread_and_seeded")


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@functools.cache
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's shipped 8x8 digits as (N, 1, 16, 16) floats in [0, 1] and labels."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = torch.from_numpy(data.images).float().div(16.0).unsqueeze(1)
    return F.interpolate(images, size=IMAGE_SIZE, mode="bilinear", align_corners=False), torch.from_numpy(data.target)


SPACES = {
    "scoped_resnet50": lambda: ScopedResNet50("s", width_multiplier=0.125, stem="cifar", num_classes=10, in_channels=1),
    "depth_resnet": lambda: DepthResNet(((1, 2), (1, 2), (1, 2)), widths=(8, 16, 32), stem="cifar", in_channels=1),
}


@dataclass
class Trial:
    sample: dict
    accuracy: float
    frozen_params: int
    spec_params: int
    state_dict_loads: bool


@dataclass
class Recorder:
    """The FunctionalEvaluator's function: train the frozen model briefly, report accuracy, record the trial."""

    space: torch.nn.Module
    trials: list[Trial] = field(default_factory=list)

    def __call__(self, model: torch.nn.Module) -> None:
        import nni

        sample = dict(nni.get_current_parameter().sample)
        images, labels = digits()
        generator = torch.Generator().manual_seed(len(self.trials))
        order = torch.randperm(len(labels), generator=generator)
        train, test = order[:64], order[64:192]
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        model.train()
        for batch in train.split(32):
            optimizer.zero_grad()
            F.cross_entropy(model(images[batch]), labels[batch]).backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            accuracy = (model(images[test]).argmax(1) == labels[test]).float().mean().item()
        net = build_model(self.space.to_spec(sample))
        try:
            net.load_state_dict(model.state_dict(), strict=True)
            loads = True
        except RuntimeError:
            loads = False
        self.trials.append(Trial(sample, accuracy, n_params(model), n_params(net), loads))
        nni.report_final_result(accuracy)


def run_search(space_name: str, strategy, home) -> tuple[list[dict], Recorder]:
    from nni.nas.evaluator import FunctionalEvaluator
    from nni.nas.experiment import NasExperiment, NasExperimentConfig

    config = NasExperimentConfig("sequential", "simplified")
    config.max_trial_number = TRIALS
    config.trial_concurrency = 1
    recorder = Recorder(SPACES[space_name]())
    experiment = NasExperiment(SPACES[space_name](), FunctionalEvaluator(recorder), strategy, config=config)
    experiment.config.experiment_working_directory = str(home)
    try:
        experiment.run()
        return experiment.export_top_models(top_k=1, formatter="dict"), recorder
    finally:
        experiment.stop()


def random_strategy():
    from nni.nas.strategy import Random

    return Random(seed=0)


def evolution_strategy():
    from nni.nas.strategy import RegularizedEvolution

    # A population of 2 among 4 trials: trials 3 and 4 are mutants of a tournament winner.
    return RegularizedEvolution(population_size=2, sample_size=2, mutation_prob=0.5, seed=0)


@pytest.mark.parametrize("space_name", list(SPACES))
@pytest.mark.parametrize("make_strategy", [random_strategy, evolution_strategy], ids=["random", "evolution"])
def test_multi_trial_strategy_searches_the_space(space_name, make_strategy, nni_home):
    strategy = make_strategy()
    exported, recorder = run_search(space_name, strategy, nni_home)
    space, trials = recorder.space, recorder.trials
    assert len(trials) == TRIALS
    assert len({tuple(sorted(trial.sample.items())) for trial in trials}) == TRIALS  # both strategies deduplicate
    labels = {label for label, _ in space.choice_labels()}
    for trial in trials:
        assert set(trial.sample) == labels  # one key per decision: the 3 activation sites of a block share one
        assert space.check_contains(trial.sample) is None
        assert trial.spec_params == trial.frozen_params  # to_spec builds the network NNI froze ...
        assert trial.state_dict_loads  # ... with the same parameter names and shapes
    (best,) = exported
    accuracies = {tuple(sorted(trial.sample.items())): trial.accuracy for trial in trials}
    assert accuracies[tuple(sorted(best.items()))] == max(accuracies.values())
    assert n_params(build_model(space.to_spec(best))) == n_params(space.freeze(best))
    if make_strategy is evolution_strategy:
        # The aging population holds the last 2 trials, with the metrics our evaluator reported.
        state = strategy.state_dict()
        assert state["individual_counter"] == TRIALS
        assert [(i.x, i.y) for i in state["population"]] == [(t.sample, t.accuracy) for t in trials[-2:]]

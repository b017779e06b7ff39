"""The training-FLOPs budget: one function, exact on hand-counted networks; the ledger books what fit() and the
supernet loop train, images counted as seen, and sums across trainings."""

import pytest
import torch
from torch import nn

from trainers import OptimConfig, fit, make_datamodule
from trainers.budget import LEDGER, TrainingLedger, measuring, record_training, training_flops

# conv 1->2 (3x3, padding 1) on a 4x4 image: 2 * 9 * 1 * 2 * 16 = 576; fc 32->10 without bias: 2 * 32 * 10 = 640.
TINY_FORWARD_FLOPS = 576 + 640


def tiny_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, bias=False), nn.ReLU(), nn.Flatten(), nn.Linear(32, 10, bias=False))


@pytest.fixture(scope="module")
def digits_4px():
    datamodule = make_datamodule("digits", batch_size=8, image_size=4, num_workers=0, augment="none")
    datamodule.setup("fit")
    return datamodule


def tiny_fit(datamodule, epochs: int, batches: int = 2) -> None:
    torch.manual_seed(0)
    fit(tiny_net(), datamodule, OptimConfig(lr=0.01), epochs, accelerator="cpu", limit_train_batches=batches,
        limit_val_batches=1)


def test_training_flops_is_three_forwards_per_image():
    assert training_flops(TINY_FORWARD_FLOPS, 16) == 3 * 1216 * 16
    assert training_flops(100, 0) == 0 and training_flops(0, 5) == 0
    with pytest.raises(ValueError, match="cannot be negative"):
        training_flops(-1, 3)


def test_hand_counted_forward_flops_are_search_spaces_cost():
    from search_spaces.cost import measure_cost

    assert measure_cost(tiny_net(), (1, 4, 4)).flops == TINY_FORWARD_FLOPS


def test_the_ledger_sums_per_kind_and_resets():
    ledger = TrainingLedger()
    assert ledger.add(10, 2, "fit") == 60
    ledger.add(10, 1, "fit")
    ledger.add(5, 4, "supernet_weights")
    assert ledger.total == 90 + 60 and ledger.images == 7
    assert ledger.to_dict() == {"fit": {"flops": 90, "images": 3}, "supernet_weights": {"flops": 60, "images": 4}}
    ledger.reset()
    assert ledger.total == 0 and ledger.to_dict() == {}


def test_measurements_nest_and_the_process_ledger_sees_everything():
    before = LEDGER.total
    with measuring() as outer:
        record_training(10, 1)
        with measuring() as inner:
            record_training(10, 2)
        record_training(10, 4)
    record_training(10, 8)  # after both blocks: neither sees it
    assert (inner.total, outer.total) == (60, 210)
    assert LEDGER.total - before == 3 * 10 * 15


def test_a_fit_books_the_images_it_trained_on(digits_4px):
    with measuring() as ledger:
        tiny_fit(digits_4px, epochs=1, batches=2)
    # 2 batches of 8 images, validation not counted
    assert ledger.to_dict() == {"fit": {"flops": training_flops(TINY_FORWARD_FLOPS, 16), "images": 16}}


def test_the_ledger_sums_across_two_fits(digits_4px):
    with measuring() as ledger:
        tiny_fit(digits_4px, epochs=1, batches=2)
        tiny_fit(digits_4px, epochs=2, batches=3)
    assert ledger.images == 16 + 2 * 24
    assert ledger.total == training_flops(TINY_FORWARD_FLOPS, 16 + 48)


def test_supernet_steps_book_the_sampled_path(one_thread_and_seeded):
    from search_spaces import ScopedResNet50, build_model
    from search_spaces.cost import measure_cost
    from strategies.proxyless import ProxylessSearchConfig
    from strategies.proxyless.search import ProxylessSearch

    space = ScopedResNet50("s", width_multiplier=1 / 16, stem="cifar", num_classes=10)
    search = ProxylessSearch(space, ProxylessSearchConfig(input_size=(3, 16, 16)))
    x, y = torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,))
    with measuring() as ledger:
        search.weight_step(x, y)
        weight_path = {label: search.bank.candidate_values[label][i] for label, i in search.bank.active.items()}
        search.arch_step(x[:3], y[:3])  # booked like a weight step of its active path (an estimate, see search.py)
        arch_path = {label: search.bank.candidate_values[label][i] for label, i in search.bank.active.items()}
    path_flops = {name: measure_cost(build_model(search.model.to_spec(path)), (3, 16, 16)).flops
                  for name, path in (("weights", weight_path), ("architecture", arch_path))}
    assert ledger.to_dict() == {
        "supernet_weights": {"flops": training_flops(path_flops["weights"], 4), "images": 4},
        "supernet_architecture": {"flops": training_flops(path_flops["architecture"], 3), "images": 3},
    }


# ---- the benchmark's budget rules (benchmarks/search_quality.py) ------------------------------------------------
def benchmark_module(name: str):
    import importlib
    import sys
    from pathlib import Path

    folder = str(Path(__file__).resolve().parents[1] / "benchmarks")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return importlib.import_module(f"quality.{name}")


def test_a_budget_limited_search_stops_before_exceeding_the_budget_and_chooses_on_validation():
    runs = benchmark_module("runs")
    proposals = [{"n": 1}, {"n": 2}, {"n": 3}, {"n": 4}]
    val = {1: 0.5, 2: 0.9, 3: 0.7, 4: 1.0}
    test = {1: 0.99, 2: 0.6, 3: 0.8, 4: 1.0}
    learned = []

    def train(sample, index):
        record_training(10, 1)  # 30 training FLOPs, and 30 more under another kind: 60 per network
        record_training(10, 1, "supernet_weights")
        return {"val_accuracy": val[sample["n"]], "test_accuracy": test[sample["n"]]}

    best, trials = runs.budget_limited_search(lambda i: proposals[i] if i < len(proposals) else None, train,
                                              lambda sample: 60, budget=150,
                                              max_trials=10, learn=lambda i, s, v: learned.append((i, v)))
    assert [t.sample["n"] for t in trials] == [1, 2]  # 60 + 60 spent; a third or fourth (60 more) would pass 150
    assert all(t.train_flops == 60 for t in trials)
    assert best.sample == {"n": 2}  # the best validation accuracy, although sample 1 tests better
    assert learned == [(0, 0.5), (1, 0.9)]
    # the first network always trains, even over budget; an exhausted proposer ends the search
    best, trials = runs.budget_limited_search(lambda i: proposals[i] if i < 1 else None, train, lambda s: 10**9,
                                              budget=1, max_trials=10)
    assert len(trials) == 1 and best.sample == {"n": 1}


def test_a_budget_limited_search_skips_a_sample_over_what_is_left_and_trains_one_that_fits():
    runs = benchmark_module("runs")
    cost = {1: 60, 2: 100, 3: 30, 4: 30}  # after 1 (60 of 100 spent), 2 would pass the budget; 3 fits, then 4 not

    def train(sample, index):
        record_training(cost[sample["n"]] // 3, 1)
        return {"val_accuracy": sample["n"] / 10, "test_accuracy": 0.0, "index": index}

    draws = [{"n": n} for n in (1, 2, 3, 4)]
    best, trials = runs.budget_limited_search(lambda i: draws[i] if i < len(draws) else None, train,
                                              lambda sample: cost[sample["n"]], budget=100, max_trials=10)
    assert [t.sample["n"] for t in trials] == [1, 3]  # 2 skipped untrained; 4 would pass 100 (60 + 30 + 30)
    assert [t.result["index"] for t in trials] == [0, 2]  # trained under the proposer's own index
    # a proposer that never stops ends after MISSES_BEFORE_STOP draws in a row that do not fit
    calls = []

    def endless(index):
        calls.append(index)
        return {"n": 1 if index == 0 else 2}

    _, trials = runs.budget_limited_search(endless, train, lambda sample: cost[sample["n"]], budget=100, max_trials=10)
    assert len(trials) == 1 and len(calls) == 1 + runs.MISSES_BEFORE_STOP


def test_whole_budget_epochs_round_and_train_at_least_once():
    runs = benchmark_module("runs")
    assert runs.epochs_for_budget(training_flops(100, 10) * 7, 100, 10) == 7
    assert runs.epochs_for_budget(int(training_flops(100, 10) * 6.6), 100, 10) == 7
    assert runs.epochs_for_budget(1, 100, 10) == 1


def test_relative_improvement_and_pareto_front():
    report = benchmark_module("report")
    assert report.relative_improvement(0.9, 0.8) == pytest.approx(12.5)
    assert report.pareto_front([(1, 0.5), (2, 0.4), (2, 0.7), (3, 0.6), (4, 0.9)]) == [(1, 0.5), (2, 0.7), (4, 0.9)]

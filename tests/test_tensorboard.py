"""TensorBoard event files: fit() writes each epoch's losses and accuracies, the supernet search its gates, and
inside an NNI trial they land where the dashboard's TensorBoard button looks."""

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from strategies.multi_trial.job_trial import trial_tensorboard_dir, trial_tensorboard_root
from search_spaces import ScopedResNet50
from strategies.proxyless import ProxylessSearchConfig
from strategies.proxyless.search import ProxylessSearch
from test_proxyless_supernet import batches, tiny_search
from trainers import OptimConfig, fit, make_datamodule
from trainers.tensorboard import run_folder, tag


def scalars(folder) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag of the event files in `folder`, as (step, value) pairs."""
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    return {name: [(e.step, e.value) for e in events.Scalars(name)] for name in events.Tags()["scalars"]}


def test_fit_writes_each_epochs_train_loss_and_val_accuracy(tmp_path, one_thread_and_seeded):
    datamodule = make_datamodule("digits", image_size=8, batch_size=64, seed=0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    result = fit(model, datamodule, OptimConfig(optimizer="adam", lr=1e-2), epochs=2, limit_train_batches=3,
                 limit_val_batches=1, tensorboard_dir=tmp_path / "train")
    logged = scalars(tmp_path / "train")
    assert {"train/loss", "train/accuracy", "val/loss", "val/accuracy", "lr"} <= set(logged)
    assert [step for step, _ in logged["train/loss"]] == [1, 2]  # x = epoch
    assert [value for _, value in logged["val/accuracy"]] == pytest.approx([h["val_accuracy"] for h in result.history])
    assert logged["train/loss"][-1][1] == pytest.approx(result.final_train_loss)


def test_fit_without_a_folder_writes_nothing(tmp_path, monkeypatch, one_thread_and_seeded):
    monkeypatch.chdir(tmp_path)
    datamodule = make_datamodule("digits", image_size=8, batch_size=64, seed=0)
    fit(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), datamodule, OptimConfig(), epochs=1, limit_train_batches=1,
        limit_val_batches=1)
    assert list(tmp_path.iterdir()) == []  # no runs/ or lightning_logs/ of its own


def test_each_training_gets_its_own_run_folder(tmp_path):
    assert [run_folder(tmp_path, "train").name for _ in range(3)] == ["train", "train-2", "train-3"]
    assert tag("train_loss") == "train/loss" and tag("val_accuracy") == "val/accuracy"
    assert tag("train_layer_lasso") == "train/layer_lasso" and tag("lr") == "lr" and tag("gates/entropy") == "gates/entropy"


def test_supernet_search_writes_gate_probabilities_entropy_and_expected_flops(tmp_path, one_thread_and_seeded):
    torch.manual_seed(0)
    space = ScopedResNet50("s", width_multiplier=1 / 16, stem="cifar", num_classes=10)  # tiny_search's
    search = ProxylessSearch(space, ProxylessSearchConfig(input_size=(3, 16, 16)), tensorboard_dir=tmp_path / "search")
    search.TENSORBOARD_EVERY = 2  # one point inside the epoch (step 2) and one at its end (step 3)
    metrics = search.run_epoch(batches(3), batches(2))
    logged = scalars(tmp_path / "search")
    probabilities = search.gate_probabilities()
    for label, probs in probabilities.items():
        for value, p in zip(search.bank.candidate_values[label], probs):
            assert [step for step, _ in logged[f"gates/{label}/{value}"]] == [2, 3]
            assert logged[f"gates/{label}/{value}"][-1][1] == pytest.approx(p, abs=1e-6)
    assert [step for step, _ in logged["gates/entropy"]] == [2, 3]
    assert 0.0 <= logged["gates/entropy"][-1][1] <= 1.0
    assert logged["gates/expected_gflops"][-1][1] == pytest.approx(metrics["expected_gflops"], rel=1e-6)
    assert logged["val/accuracy"] == [(3, pytest.approx(metrics["val_accuracy"]))]


def test_a_search_outside_an_nni_trial_logs_nothing(monkeypatch, one_thread_and_seeded):
    monkeypatch.delenv("NNI_OUTPUT_DIR", raising=False)
    assert tiny_search().tensorboard is None


def test_inside_a_trial_the_dashboards_tensorboard_folder_is_linked_to_the_trials(tmp_path, monkeypatch):
    # NNI 3.0, platform local: the trial runs in EXP/environments/local-env/trials/ID, the TensorBoard button
    # reads EXP/trials/ID/output/tensorboard.
    output = tmp_path / "EXP" / "environments" / "local-env" / "trials" / "AbCdE"
    seen = tmp_path / "EXP" / "trials" / "AbCdE" / "output" / "tensorboard"
    seen.mkdir(parents=True)  # what the manager leaves when TensorBoard was started before the trial logged
    monkeypatch.setenv("NNI_OUTPUT_DIR", str(output))
    assert trial_tensorboard_root() == output / "tensorboard"
    assert seen.is_symlink() and seen.resolve() == (output / "tensorboard").resolve()
    assert [trial_tensorboard_dir("train").name for _ in range(2)] == ["train", "train-2"]
    assert sorted(path.name for path in seen.iterdir()) == ["train", "train-2"]
    assert trial_tensorboard_root() == output / "tensorboard"  # a second training: the link stays
    monkeypatch.delenv("NNI_OUTPUT_DIR")
    assert trial_tensorboard_root() is None and trial_tensorboard_dir("train") is None


def test_the_writer_is_made_only_on_the_first_scalar(tmp_path):
    from trainers.tensorboard import ScalarLog

    log = ScalarLog(tmp_path / "run")
    log.close()
    assert not (tmp_path / "run").exists()
    log.scalars({"val_accuracy": torch.tensor(0.5)}, step=1)
    log.close()
    assert scalars(tmp_path / "run") == {"val/accuracy": [(1, 0.5)]}

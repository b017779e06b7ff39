"""The paper configs run at their real input sizes: CIFAR-10-shaped images (synthetic: no dataset can be
downloaded here) through the configs' own settings, shortened only in epochs, batches and search length."""

from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml

from strategies.local_search import search_locally
from strategies.reporting import PrintReporter
from strategies.trial import run_trial
from trainers.datasets import DATASETS, DatasetEntry

REPO = Path(__file__).resolve().parents[1]
SHORT = {"batch_size": 8, "limit_train_batches": 2, "limit_val_batches": 1, "num_workers": 0}


@pytest.fixture
def synthetic_cifar10(monkeypatch):
    """cifar10's registry entry (10 classes, 3 x 32 x 32, its mean/std) reading 48 train / 16 test random images."""
    def read(info, data_dir, train, download):
        generator = torch.Generator().manual_seed(0 if train else 1)
        count = 48 if train else 16
        images = torch.randint(0, 256, (count, 3, 32, 32), dtype=torch.uint8, generator=generator)
        return images, torch.randint(0, 10, (count,), generator=generator)

    monkeypatch.setitem(DATASETS, "cifar10", DatasetEntry(DATASETS["cifar10"].info, read))


def class_args(name: str) -> dict:
    return yaml.safe_load((REPO / "nni_configs" / name).read_text())["tuner"]["classArgs"]


def test_proxyless_scope_f_at_224_px_full_width(synthetic_cifar10, tmp_path):
    from strategies.proxyless import parse_tuner_args

    settings = parse_tuner_args(class_args("proxyless_scope_f.yml"))[0]
    assert (settings.image_size, settings.width_multiplier, settings.stem) == (224, 1.0, "imagenet")
    settings = replace(settings, search_epochs=1, retrain_epochs=1, **{**SHORT, "limit_train_batches": 1})
    result = run_trial({"method": "proxyless", "settings": settings.to_dict()}, tmp_path, PrintReporter())
    assert len(result["architecture"]) == 2 * 16 and result["test_split"] == "the dataset's test split"
    # 23,528,522 params for the plain 10-class ResNet-50 (the paper's count); each 5x5 middle conv adds 16 c^2
    fives = sum(value == "k5" for label, value in result["architecture"].items() if label.endswith("_kernel"))
    assert result["params"] >= 23_528_522 and (result["params"] > 23_528_522) == (fives > 0)


def test_hill_climbing_paper_config_at_32_px(synthetic_cifar10, tmp_path):
    settings = {**class_args("hill_climbing.yml"), **SHORT, "n_steps": 1, "n_neighbours": 2, "pretrain_epochs": 1,
                "epochs_neighbour": 1, "epochs_final": 1, "ensemble_last": 1}
    summary = search_locally("hill_climbing", tmp_path, **settings)
    # the paper's start net at full width: convs 3->64->128->256 (3x3) with BN, fc 256->10
    assert summary["start_params"] == 27 * 64 + 128 + 9 * 64 * 128 + 256 + 9 * 128 * 256 + 512 + 2570 == 373_834
    assert "train_val_accuracy" in summary and "ensemble_test_accuracy" in summary


def test_layer_pruning_paper_config_at_32_px(synthetic_cifar10, tmp_path):
    settings = {**class_args("layer_pruning.yml"), **SHORT, "n_insertions": 1, "n_morphnet": 1, "epochs": 1,
                "variant_epochs": 1}
    summary = search_locally("layer_pruning", tmp_path, **settings)
    assert summary["zeta"] == 1e8 and summary["flops"] <= 1e8 and summary["test_split"]


def test_stagewise_paper_config_at_32_px(synthetic_cifar10, tmp_path):
    settings = {**class_args("stagewise.yml"), **SHORT, "iterations": 1, "epochs": 1, "extra_epochs": 1,
                "score_samples": 40}
    summary = search_locally("stagewise", tmp_path, **settings)
    # the start net is the paper's ResNet39 (6, 6, 6) at full width: 0.56M params, 83M MACs at 32 px
    assert summary["start_depths"] == [6, 6, 6] and summary["start_params"] == 564_122
    assert round(summary["start_macs"] / 1e6) == 83 and summary["test_split"] == "the dataset's test split"
    rows = summary["iterations"]
    assert rows[0]["depths"] == [6, 6, 6] and len(rows[0]["stage_scores"]) == 3

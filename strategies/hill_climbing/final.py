"""The final job's two paper options: training on train + validation data, and the snapshot ensemble.

Trial-side only (torch). The union is built here over the data module's own splits rather than inside
trainers/datamodule.py: the validation images get the training (augmented) transform, the test split is
never touched.
"""

from __future__ import annotations

from typing import Sequence

import pytorch_lightning as pl
import torch
from torch.utils.data import ConcatDataset, DataLoader

from search_spaces.spec import ArchSpec
from trainers import ClassificationDataModule, training_device
from trainers.views import with_transform

from ..multi_trial.job_trial import build_with_weights, load_job_model


class TrainAndValData(pl.LightningDataModule):
    """Trains on the training split + the validation split (both augmented); validates on the validation
    split, which is then no held-out number; tests on the untouched test split."""

    def __init__(self, datamodule: ClassificationDataModule):
        super().__init__()
        datamodule.setup("fit")
        self.base = datamodule
        augmented, _ = datamodule.transforms()  # the training transform, with the data module's own settings
        self.train_set = ConcatDataset([datamodule.train_set, with_transform(datamodule.val_set, augmented)])
        self.test_source = datamodule.test_source

    def train_dataloader(self) -> DataLoader:
        base = self.base
        return DataLoader(self.train_set, batch_size=base.batch_size, shuffle=True, num_workers=base.num_workers,
                          persistent_workers=base.num_workers > 0, pin_memory=base.pin_memory,
                          generator=torch.Generator().manual_seed(base.seed))

    def val_dataloader(self) -> DataLoader:
        return self.base.val_dataloader()

    def test_dataloader(self) -> DataLoader:
        return self.base.test_dataloader()


def load_members(checkpoints: Sequence[str]) -> list[tuple[ArchSpec, torch.nn.Module]]:
    """The ensemble's nets from their job checkpoints, on the training device, in eval mode."""
    members = []
    for checkpoint in checkpoints:
        spec, weights = load_job_model(checkpoint)
        members.append((spec, build_with_weights(spec, weights).to(training_device()).eval()))
    return members


@torch.no_grad()
def ensemble_test_accuracy(models: Sequence[torch.nn.Module], datamodule: pl.LightningDataModule) -> float:
    """Test accuracy of the uniform snapshot ensemble: the mean of the members' softmax outputs."""
    device = training_device()
    correct, count = 0, 0
    for images, labels in datamodule.test_dataloader():
        images, labels = images.to(device), labels.to(device)
        probabilities = torch.stack([model(images).softmax(dim=1) for model in models]).mean(dim=0)
        correct += int((probabilities.argmax(dim=1) == labels).sum())
        count += labels.numel()
    return correct / max(1, count)

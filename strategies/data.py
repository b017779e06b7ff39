"""Data settings every method shares (the methods' settings subclass them), and the data module they describe.

No torch at import: NNI's tuner process parses these, and NNI gives it 10 s to connect; the data module and
the dataset facts are loaded when a trial asks for them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from trainers.datasets import DATASETS, Augment, Normalize, dataset_entry

from .settings import SettingsError, require_choice

if TYPE_CHECKING:
    from trainers import ClassificationDataModule


@dataclass(frozen=True)
class DataSettings:
    """Where the data comes from and how batches are made; the same for every job of one search."""

    dataset: str = "cifar10"
    data_dir: str = "data"
    image_size: int | None = None  # None: the dataset's native size
    augment: Augment = "default"
    normalize: Normalize = "dataset"  # or "unit": pixels in [0, 1], not standardised (ResBuilder's MNIST family)
    batch_size: int = 64
    val_fraction: float = 0.1  # search decisions use this held-out part of the training set
    limit_train_batches: int | None = None  # smoke runs only
    limit_val_batches: int | None = None
    num_workers: int = 2
    seed: int = 0

    def check(self, where: str) -> None:
        require_choice(self.dataset, DATASETS, "dataset", where)
        if self.batch_size < 1:
            raise SettingsError(f"{where}: batch_size must be at least 1, got {self.batch_size}.")
        if not 0.0 < self.val_fraction < 1.0:
            raise SettingsError(f"{where}: val_fraction must be between 0 and 1, got {self.val_fraction}.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def input_size(data: DataSettings) -> tuple[int, int, int]:
    """(channels, size, size) of the images the networks see: the dataset's native size unless image_size.

    From the registry's static facts, not dataset_info(), which also counts an image folder's classes: the
    folder need not exist where a config is validated (NNI's tuner process, `resnas validate`).
    """
    info = dataset_entry(data.dataset).info
    size = data.image_size or info.image_size
    return (info.in_channels, size, size)


def make_job_datamodule(data: DataSettings) -> ClassificationDataModule:
    """The data module a trial trains on, set up for fitting (DataError names missing files)."""
    from trainers import make_datamodule

    datamodule = make_datamodule(
        data.dataset,
        data_dir=data.data_dir,
        batch_size=data.batch_size,
        val_fraction=data.val_fraction,
        seed=data.seed,
        image_size=input_size(data)[1],
        augment=data.augment,
        num_workers=data.num_workers,
        normalize=data.normalize,
    )
    datamodule.setup("fit")
    return datamodule


def export_normalization(data: DataSettings) -> dict[str, tuple[float, ...]]:
    """mean and std for a timm export: what the network saw in training, so timm's transforms reproduce it."""
    from trainers import dataset_info, normalization

    mean, std = normalization(dataset_info(data.dataset, data.data_dir), data.normalize)
    return {"mean": mean, "std": std}

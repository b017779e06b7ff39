"""Data settings every multi-trial method shares (the methods' settings subclass them).

No torch here: NNI's tuner process parses these, and NNI gives it 10 s to connect.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from .settings import SettingsError, require_choice


@dataclass(frozen=True)
class DataSettings:
    """Where the data comes from and how batches are made; the same for every job of one search."""

    dataset: str = "cifar10"
    data_dir: str = "data"
    image_size: int | None = None  # None: the dataset's native size
    augment: Literal["default", "none", "crop", "shift", "resized_crop"] = "default"
    batch_size: int = 64
    val_fraction: float = 0.1  # search decisions use this held-out part of the training set
    limit_train_batches: int | None = None  # smoke runs only
    limit_val_batches: int | None = None
    num_workers: int = 2
    seed: int = 0

    def check(self, where: str) -> None:
        from trainers import DATASETS

        require_choice(self.dataset, DATASETS, "dataset", where)
        if self.batch_size < 1:
            raise SettingsError(f"{where}: batch_size must be at least 1, got {self.batch_size}.")
        if not 0.0 < self.val_fraction < 1.0:
            raise SettingsError(f"{where}: val_fraction must be between 0 and 1, got {self.val_fraction}.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

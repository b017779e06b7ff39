"""Data settings every method shares (the methods' settings subclass them), and the data module they describe.

No torch at import: NNI's tuner process parses these, and NNI gives it 10 s to connect; the data module and
the dataset facts are loaded when a trial asks for them.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from trainers.datasets import DATASETS, Augment, Normalize, dataset_entry
from trainers.speed import PRECISIONS, Precision, SpeedError, Switch, check_switch

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
    num_workers: int | None = None  # None: sized to the machine (all spare CPUs up to 8 with CUDA, none on a CPU)
    seed: int = 0
    # Speed (trainers/speed.py). precision auto: 32 on the CPU, bf16-mixed on CUDA (16-mixed where bf16 is not
    # supported); an explicit mixed precision on a machine without a GPU stops the trial with the fix named.
    precision: Precision = "auto"
    channels_last: Switch = "auto"  # NHWC weights and batches; auto: on with CUDA and mixed precision
    data_on_device: Switch = "auto"  # in-memory datasets kept and augmented on the GPU; auto: on with CUDA

    def check(self, where: str) -> None:
        require_choice(self.dataset, DATASETS, "dataset", where)
        require_choice(self.precision, PRECISIONS, "precision", where)
        for name in ("channels_last", "data_on_device"):
            try:
                check_switch(getattr(self, name), name)
            except SpeedError as error:
                raise SettingsError(f"{where}: {error}") from None
        if self.num_workers is not None and self.num_workers < 0:
            raise SettingsError(f"{where}: num_workers must be at least 0 (or unset), got {self.num_workers}.")
        if self.data_on_device is True and dataset_entry(self.dataset).read is None:
            raise SettingsError(f"{where}: data_on_device needs an in-memory dataset and {self.dataset} is read "
                                f"from folders; set data_on_device to auto or false.")
        if self.batch_size < 1:
            raise SettingsError(f"{where}: batch_size must be at least 1, got {self.batch_size}.")
        if not 0.0 < self.val_fraction < 1.0:
            raise SettingsError(f"{where}: val_fraction must be between 0 and 1, got {self.val_fraction}.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Defaults that changed: a search saved with the former default still matches a current default (tuners
# compare saved settings on resume, see settings_match). num_workers: 2, now None = sized to the machine.
FORMER_DEFAULTS: dict[str, Any] = {"num_workers": 2}


def settings_match(saved: dict[str, Any], current: Any) -> bool:
    """Whether `saved` (a settings dict from an earlier run, as JSON) describes the same search as the
    settings dataclass `current`. Keys added since (absent from `saved`) match when `current` keeps their
    default, and a saved former default matches the current default, so a release that adds a setting does
    not restart searches made before it; any other difference does."""
    now = json.loads(json.dumps(current.to_dict()))  # tuples read back as lists, like the saved file
    defaults = {field.name: _json_default(field) for field in dataclasses.fields(current)}
    for key in saved.keys() | now.keys():
        if key not in now:
            return False  # a setting that no longer exists: the search meant something else
        if key not in saved:
            if now[key] != defaults[key]:
                return False
            continue
        former_default = key in FORMER_DEFAULTS and saved[key] == FORMER_DEFAULTS[key] and now[key] == defaults[key]
        if saved[key] != now[key] and not former_default:
            return False
    return True


_NONE = object()  # the "default" of a required field: equal to no value


def _json_default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        value = field.default
    elif field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
    else:
        return _NONE  # a required field is never "left at its default"
    return json.loads(json.dumps(value))


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
        data_on_device=data.data_on_device,
    )
    datamodule.setup("fit")
    return datamodule


def export_normalization(data: DataSettings) -> dict[str, tuple[float, ...]]:
    """mean and std for a timm export: what the network saw in training, so timm's transforms reproduce it."""
    from trainers import dataset_info, normalization

    mean, std = normalization(dataset_info(data.dataset, data.data_dir), data.normalize)
    return {"mean": mean, "std": std}

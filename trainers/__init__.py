"""Data, the Lightning classification system and fit(); usable without NNI (nothing here imports nni).

Names load on first use (PEP 562): NNI's tuner process reads the dataset registry and writes files atomically
through this package, and must not pay for importing torch and Lightning (NNI gives it 10 s to connect).
"""

from __future__ import annotations

import importlib
from typing import Any

_NAMES = {
    "checkpoint": ("load_checkpoint", "read_checkpoint", "save_checkpoint", "write_checkpoint"),
    "datamodule": ("ClassificationDataModule", "build_transform", "make_datamodule"),
    "datasets": ("AUGMENTS", "Augment", "DATASETS", "DataError", "DatasetInfo", "NORMALIZATIONS", "Normalize",
                 "dataset_info", "normalization"),
    "errors": ("CheckpointError",),
    "device": ("lightning_accelerator", "training_device"),
    "device_data": ("DeviceBatches",),
    "speed": ("PRECISIONS", "Precision", "SpeedError", "resolve_precision"),
    "fitting": ("FitResult", "evaluate", "fit"),
    "system": ("ClassificationSystem", "OptimConfig", "TrainingDivergedError"),
}
_MODULE_OF = {name: module for module, names in _NAMES.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'trainers' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_MODULE_OF[name]}", __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value

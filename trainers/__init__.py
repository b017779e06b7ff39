"""Data, the Lightning classification system and fit(); usable without NNI (nothing here imports nni)."""

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .datamodule import AUGMENTS, ClassificationDataModule, build_transform, make_datamodule
from .datasets import DATASETS, DataError, DatasetInfo, dataset_info
from .fit import FitResult, evaluate, fit
from .system import ClassificationSystem, OptimConfig, TrainingDivergedError

"""TensorBoard event files for trainings: fit()'s per-epoch scalars and any loop's own (the supernet search's).

The caller names the folder; nothing here knows where NNI keeps a trial's files. Each training writes into its
own run folder (run_folder: "train", "train-2", ...), so a trial that trains several nets (a multi-trial job's
training and its retraining) shows one curve per training, not one zig-zag.

torch.utils.tensorboard needs the `tensorboard` package, which is also what NNI's dashboard runs for its
TensorBoard button; it is imported on the first write, so a training without a folder never loads it. No
Lightning here either: the supernet search loop imports this module. fit()'s callback is fitting.TensorBoardEpochs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

SPLITS = ("train", "val", "test")


def run_folder(root: Path, name: str) -> Path:
    """A new, empty root/name, or root/name-2, -3, ... when that was taken: never two trainings in one run.
    Made here, not on the first write, so that two trainings that have not logged yet do not share it."""
    root.mkdir(parents=True, exist_ok=True)
    number = 1
    while True:
        candidate = root / (name if number == 1 else f"{name}-{number}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            number += 1


def tag(metric: str) -> str:
    """`train_loss` -> `train/loss`: TensorBoard groups tags by their first path part, one section per split."""
    split, _, rest = metric.partition("_")
    return f"{split}/{rest}" if split in SPLITS and rest else metric


class ScalarLog:
    """Scalars into one run folder's event file; the writer (and tensorboard) load on the first write."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._writer = None

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.folder))
        for name, value in values.items():
            self._writer.add_scalar(tag(name), float(value), global_step=step)
        self._writer.flush()  # readers (TensorBoard, the dashboard) see each epoch as it ends; one write per call

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

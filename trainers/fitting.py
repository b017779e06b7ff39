"""fit(): train any nn.Module with Lightning and return plain numbers; evaluate(): accuracy on a split."""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import pytorch_lightning as pl
import torch
from torch import nn
from torch.nn import functional as F

from search_spaces.cost import measure_cost

from .budget import record_training
from .checkpoint import save_checkpoint
from .device import lightning_accelerator, training_device
from .speed import Switch, lightning_precision, resolve_channels_last, resolve_precision
from .system import ClassificationSystem, ExtraLoss, OptimConfig
from .tensorboard import ScalarLog

EpochCallback = Callable[[int, dict[str, float]], None]


@dataclass
class FitResult:
    final_val_accuracy: float
    best_val_accuracy: float
    final_val_loss: float
    final_train_loss: float
    epochs: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)


class _EpochReporter(pl.Callback):
    """Collects the per-epoch metrics and hands them to a plain callback (NNI reporting lives elsewhere)."""

    def __init__(self, on_epoch_end: EpochCallback | None):
        self.on_epoch_end = on_epoch_end
        self.history: list[dict[str, float]] = []

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = {key: float(value) for key, value in trainer.callback_metrics.items()}
        metrics["epoch"] = trainer.current_epoch + 1
        metrics["lr"] = trainer.optimizers[0].param_groups[0]["lr"]
        self.history.append(metrics)
        if self.on_epoch_end is not None:
            self.on_epoch_end(trainer.current_epoch + 1, metrics)


class _ImagesSeen(pl.Callback):
    """Counts the images of the training steps and keeps one batch's image shape, for the training-FLOPs ledger
    (trainers.budget); a Python int per step, nothing that waits on the device."""

    def __init__(self) -> None:
        self.images = 0
        self.image_size: tuple[int, ...] | None = None

    def on_train_batch_start(self, trainer: pl.Trainer, module: pl.LightningModule, batch, batch_index: int) -> None:
        images = batch[0]
        self.images += int(images.shape[0])
        if self.image_size is None:
            self.image_size = tuple(int(n) for n in images.shape[1:])

    def book(self, model: nn.Module) -> None:
        """Adds what this fit trained to the ledger: the network's forward FLOPs, measured once per fit on the
        meta device at the batches' image size, x the images seen (a fit cut short books what it did)."""
        if self.image_size is None or self.images == 0:
            return
        record_training(measure_cost(model, self.image_size).flops, self.images, "fit")


class TensorBoardEpochs(pl.Callback):
    """fit()'s per-epoch metrics (train/val loss and accuracy, extra loss terms, lr) at step = epoch."""

    def __init__(self, folder: Path):
        self.writer = ScalarLog(folder)

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:  # one writer, not one per DDP process
            return
        values = {name: float(value) for name, value in trainer.callback_metrics.items()}
        values["lr"] = trainer.optimizers[0].param_groups[0]["lr"]
        self.writer.scalars(values, step=trainer.current_epoch + 1)

    def teardown(self, trainer: pl.Trainer, module: pl.LightningModule, stage: str) -> None:
        self.writer.close()


def quiet_lightning() -> None:
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*number of training batches.*")


def fit(
    model: nn.Module,
    datamodule: pl.LightningDataModule,
    optim: OptimConfig,
    epochs: int,
    *,
    extra_losses: Sequence[ExtraLoss] = (),
    on_epoch_end: EpochCallback | None = None,
    seed: int = 0,
    accelerator: str | None = None,
    devices: int | str = 1,
    limit_train_batches: int | float | None = None,
    limit_val_batches: int | float | None = None,
    checkpoint_path: Path | None = None,
    checkpoint_extra: dict[str, Any] | None = None,
    precision: str = "auto",
    channels_last: Switch = "auto",
    tensorboard_dir: Path | None = None,
) -> FitResult:
    """Train `model` in place for `epochs` epochs; validation runs after every epoch.

    precision: auto (32 on the CPU; bf16-mixed, else 16-mixed, on CUDA), 32, bf16-mixed or 16-mixed (speed.py);
    channels_last: NHWC weights and batches (auto: with CUDA and mixed precision). SpeedError names the fix.
    tensorboard_dir: this training's own run folder for TensorBoard event files (tensorboard.run_folder picks
    a free one), one write per epoch; None writes none.
    """
    accelerator = accelerator or lightning_accelerator()  # None: the GPU a trial was given, else CPU
    on_cuda = accelerator in ("gpu", "cuda") or (accelerator == "auto" and training_device().type == "cuda")
    device = torch.device("cuda" if on_cuda else "cpu")
    precision = resolve_precision(precision, device)
    channels_last = resolve_channels_last(channels_last, device, precision)
    quiet_lightning()
    pl.seed_everything(seed, workers=True, verbose=False)
    system = ClassificationSystem(model, optim, epochs, extra_losses, channels_last=channels_last)
    reporter = _EpochReporter(on_epoch_end)
    images_seen = _ImagesSeen()
    callbacks: list[pl.Callback] = [reporter, images_seen]
    if tensorboard_dir is not None:
        callbacks.append(TensorBoardEpochs(tensorboard_dir))
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator=accelerator,
        devices=devices,
        precision=lightning_precision(precision),
        benchmark=device.type == "cuda",  # cuDNN picks its fastest kernels once per shape; the shapes are fixed
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_train_batches=limit_train_batches,
        limit_val_batches=limit_val_batches,
        callbacks=callbacks,
    )
    if channels_last:
        model.to(memory_format=torch.channels_last)
    started = time.perf_counter()
    try:
        trainer.fit(system, datamodule=datamodule)
    finally:  # back to the default layout: safetensors exports and later edits want contiguous weights
        model.to(memory_format=torch.contiguous_format)
        images_seen.book(model)
    seconds = time.perf_counter() - started
    model.cpu()
    if checkpoint_path is not None:
        save_checkpoint(checkpoint_path, model, extra={"epochs": epochs, **(checkpoint_extra or {})})
    history = reporter.history
    last = history[-1] if history else {}
    return FitResult(
        final_val_accuracy=last.get("val_accuracy", float("nan")),
        best_val_accuracy=max((h.get("val_accuracy", float("nan")) for h in history), default=float("nan")),
        final_val_loss=last.get("val_loss", float("nan")),
        final_train_loss=last.get("train_loss", float("nan")),
        epochs=len(history),
        seconds=seconds,
        history=history,
    )


@torch.no_grad()
def evaluate(model: nn.Module, datamodule: pl.LightningDataModule, split: str = "test") -> dict[str, float]:
    """Accuracy and mean loss of `model` (eval mode) on the test or validation split. Every module's train/eval mode
    is restored afterwards: Lightning (>= 2.3) keeps a submodule's mode through fit, so a network evaluated before
    training would otherwise train with its BatchNorm frozen on running statistics."""
    loaders = {"test": datamodule.test_dataloader, "val": datamodule.val_dataloader}
    if split not in loaders:
        raise ValueError(f"unknown split {split!r}; use test or val.")
    modes = {module: module.training for module in model.modules()}
    model.eval()
    device = next(model.parameters()).device
    correct, loss, count = 0, 0.0, 0
    try:
        with torch.no_grad():
            for images, labels in loaders[split]():
                images, labels = images.to(device), labels.to(device)
                logits = model(images)
                loss += float(F.cross_entropy(logits, labels, reduction="sum"))
                correct += int((logits.argmax(1) == labels).sum())
                count += labels.numel()
    finally:
        for module, training in modes.items():
            module.training = training
    return {"accuracy": correct / max(1, count), "loss": loss / max(1, count), "samples": count}

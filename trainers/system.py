"""ClassificationSystem: any nn.Module with its optimiser, schedule and extra loss terms (Lightning)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Sequence, get_args

import pytorch_lightning as pl
import torch
from torch import nn
from torch.nn import functional as F

OPTIMIZERS: tuple[str, ...] = ("sgd", "adam")
SCHEDULES: tuple[str, ...] = ("none", "cosine", "sgdr", "step")
# all: weight decay on every parameter (torch's default); kernels: on conv and linear weights only, like a Keras
# kernel_regularizer (ResBuilder's L2), so BN scales and biases, which MorphNet's term reads, are not decayed.
DecayOn = Literal["all", "kernels"]
DECAY_ON: tuple[str, ...] = get_args(DecayOn)
KERNEL_LAYERS = (nn.Conv2d, nn.Linear)

# (name, term): term(model) is a scalar added to the cross-entropy (LayerLasso, MorphNet, ...).
ExtraLoss = tuple[str, Callable[[nn.Module], torch.Tensor]]


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; the message names the epoch, step and the fix."""


@dataclass(frozen=True)
class OptimConfig:
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 0.0
    weight_decay_on: DecayOn = "all"
    schedule: Literal["none", "cosine", "sgdr", "step"] = "cosine"
    lr_min: float = 0.0
    sgdr_period: int = 10  # SGDR: epochs until the first restart (T_0)
    sgdr_multiplier: int = 1  # SGDR: period growth after each restart (T_mult)
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; use one of {', '.join(OPTIMIZERS)}.")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; use one of {', '.join(SCHEDULES)}.")
        if self.weight_decay_on not in DECAY_ON:
            raise ValueError(f"unknown weight_decay_on {self.weight_decay_on!r}; use one of {', '.join(DECAY_ON)}.")
        if self.lr <= 0:
            raise ValueError(f"learning rate {self.lr} must be positive.")


def parameter_groups(model: nn.Module, config: OptimConfig) -> list[dict]:
    """The optimiser's parameter groups: one for "all"; for "kernels", conv/linear weights with the weight
    decay and every other parameter (BN weights and biases, linear biases) with none."""
    if config.weight_decay_on == "all":
        return [{"params": list(model.parameters())}]
    kernels = {id(module.weight) for module in model.modules()
               if isinstance(module, KERNEL_LAYERS) and module.weight is not None}
    decayed = [parameter for parameter in model.parameters() if id(parameter) in kernels]
    others = [parameter for parameter in model.parameters() if id(parameter) not in kernels]
    groups = [{"params": decayed}, {"params": others, "weight_decay": 0.0}]
    return [group for group in groups if group["params"]]


def make_optimizer(parameters, config: OptimConfig) -> torch.optim.Optimizer:
    """`parameters`: parameters or parameter groups (see parameter_groups); groups without their own
    weight_decay get config.weight_decay."""
    if config.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(
        parameters, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov and config.momentum > 0,
        weight_decay=config.weight_decay,
    )


def make_scheduler(optimizer: torch.optim.Optimizer, config: OptimConfig, epochs: int):
    """Stepped once per epoch."""
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs), eta_min=config.lr_min)
    if config.schedule == "sgdr":
        return torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
            optimizer, T_0=config.sgdr_period, T_mult=config.sgdr_multiplier, eta_min=config.lr_min
        )
    if config.schedule == "step":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(config.milestones), gamma=config.gamma)
    return None


class EpochMeans:
    """Batch-size-weighted epoch means of a few scalars, summed on the device (what Lightning's
    `self.log(on_epoch=True)` computes, without its ~1 ms of bookkeeping per call and step)."""

    def __init__(self, names: Sequence[str]):
        self.names = list(names)
        self.sums: torch.Tensor | None = None
        self.count = 0

    def add(self, values: Sequence[torch.Tensor], batch_size: int) -> None:
        stacked = torch.stack([value.detach().float() for value in values]) * batch_size
        self.sums = stacked if self.sums is None else self.sums + stacked
        self.count += batch_size

    def means(self) -> dict[str, torch.Tensor]:
        if self.sums is None:
            return {}
        return dict(zip(self.names, self.sums / self.count))


class ClassificationSystem(pl.LightningModule):
    # Non-finite losses are looked for in groups: each look is a GPU sync, which per step would stall the
    # queue of kernels. On the CPU there is no queue to stall, so every step is looked at.
    DIVERGENCE_CHECK_EVERY_ON_GPU = 25

    def __init__(self, model: nn.Module, optim: OptimConfig, epochs: int, extra_losses: Sequence[ExtraLoss] = (),
                 channels_last: bool = False):
        super().__init__()
        self.model = model
        self.optim = optim
        self.epochs = epochs
        self.extra_losses = list(extra_losses)
        self.channels_last = channels_last  # batches as NHWC, like the weights (fit converts the model)
        self._train_means = self._val_means = None
        self._unchecked: list[tuple[int, torch.Tensor]] = []  # (step, loss) not yet looked at for NaN/inf

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def _layout(self, images: torch.Tensor) -> torch.Tensor:
        """Batches in the weights' memory format (a no-op copy-free check when already so)."""
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images

    def loss_terms(self, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        terms = {"cross_entropy": F.cross_entropy(logits, labels)}
        for name, term in self.extra_losses:
            terms[name] = term(self.model)
        return terms

    # ---- training ---------------------------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        names = ["train_loss", "train_accuracy", *(f"train_{name}" for name, _ in self.extra_losses)]
        self._train_means = EpochMeans(names)

    def training_step(self, batch, batch_index: int) -> torch.Tensor:
        images, labels = batch
        logits = self.model(self._layout(images))
        terms = self.loss_terms(logits, labels)
        loss = torch.stack(list(terms.values())).sum()
        accuracy = (logits.argmax(1) == labels).float().mean()
        self._train_means.add([loss, accuracy, *(terms[name] for name, _ in self.extra_losses)], labels.numel())
        self._unchecked.append((batch_index, loss.detach()))
        last = batch_index + 1 >= self.trainer.num_training_batches
        if last or self.device.type != "cuda" or len(self._unchecked) >= self.DIVERGENCE_CHECK_EVERY_ON_GPU:
            self._check_divergence()
        if last:  # logged here, before the epoch-end callbacks read callback_metrics (fit's reporter does)
            self._log_train_means()
        return loss

    def _check_divergence(self) -> None:
        steps, losses = zip(*self._unchecked)
        self._unchecked.clear()
        finite = torch.isfinite(torch.stack(losses)).tolist()  # the one sync
        if all(finite):
            return
        first = finite.index(False)
        raise TrainingDivergedError(
            f"training loss became {losses[first].item()} at epoch {self.current_epoch} step {steps[first]}; lower "
            f"the learning rate ({self.optim.lr}) or check the data for NaNs."
        )

    def _log_train_means(self) -> None:
        for name, value in self._train_means.means().items():
            self.log(name, value, on_step=False, on_epoch=True, batch_size=1)
        self._train_means.sums = None  # logged once per epoch

    def on_train_epoch_end(self) -> None:
        if self._unchecked:  # an epoch cut short (max_steps) or of unknown length
            self._check_divergence()
        if self._train_means is not None and self._train_means.sums is not None:
            self._log_train_means()

    # ---- validation ---------------------------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._val_means = EpochMeans(["val_loss", "val_accuracy"])

    def validation_step(self, batch, batch_index: int) -> None:
        images, labels = batch
        logits = self.model(self._layout(images))
        accuracy = (logits.argmax(1) == labels).float().mean()
        self._val_means.add([F.cross_entropy(logits, labels), accuracy], labels.numel())

    def on_validation_epoch_end(self) -> None:
        for name, value in self._val_means.means().items():
            self.log(name, value, on_epoch=True, batch_size=1)

    def configure_optimizers(self):
        optimizer = make_optimizer(parameter_groups(self.model, self.optim), self.optim)
        scheduler = make_scheduler(optimizer, self.optim, self.epochs)
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

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


class ClassificationSystem(pl.LightningModule):
    def __init__(self, model: nn.Module, optim: OptimConfig, epochs: int, extra_losses: Sequence[ExtraLoss] = ()):
        super().__init__()
        self.model = model
        self.optim = optim
        self.epochs = epochs
        self.extra_losses = list(extra_losses)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def loss_terms(self, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        terms = {"cross_entropy": F.cross_entropy(logits, labels)}
        for name, term in self.extra_losses:
            terms[name] = term(self.model)
        return terms

    def training_step(self, batch, batch_index: int) -> torch.Tensor:
        images, labels = batch
        logits = self.model(images)
        terms = self.loss_terms(logits, labels)
        loss = torch.stack(list(terms.values())).sum()
        if not torch.isfinite(loss):
            raise TrainingDivergedError(
                f"training loss became {loss.item()} at epoch {self.current_epoch} step {batch_index}; lower the "
                f"learning rate ({self.optim.lr}) or check the data for NaNs."
            )
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        self.log("train_accuracy", (logits.argmax(1) == labels).float().mean(), on_step=False, on_epoch=True)
        for name, value in terms.items():
            if name != "cross_entropy":
                self.log(f"train_{name}", value, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_index: int) -> None:
        images, labels = batch
        logits = self.model(images)
        self.log("val_loss", F.cross_entropy(logits, labels), on_epoch=True)
        self.log("val_accuracy", (logits.argmax(1) == labels).float().mean(), on_epoch=True)

    def configure_optimizers(self):
        optimizer = make_optimizer(parameter_groups(self.model, self.optim), self.optim)
        scheduler = make_scheduler(optimizer, self.optim, self.epochs)
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

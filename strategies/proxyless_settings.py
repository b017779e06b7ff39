"""Settings of one ProxylessNAS search-scope trial; defaults are the paper's (CIFAR-10, Table I)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .data_settings import DataSettings
from .settings import SettingsError, require_choice

SCOPE_NAMES = ("s", "m", "l", "f")


@dataclass(frozen=True)
class ProxylessSettings(DataSettings):
    # DataSettings: dataset (cifar10), data_dir, image_size, batch_size (64), val_fraction (0.1: architecture
    # steps use this held-out part of the training set), limits, num_workers, seed.
    scope: str = "m"
    stem: Literal["imagenet", "cifar"] = "imagenet"  # the paper's counts match torchvision's 7x7 stem
    width_multiplier: float = 1.0
    # The paper: random crop + resize, horizontal flip p=0.5 (flips only where labels allow), normalisation.
    augment: Literal["resized_crop", "crop", "shift", "none", "default"] = "resized_crop"
    search_epochs: int = 300
    retrain_epochs: int = 300
    # Weights: SGD, Nesterov, lr 0.05, momentum 0.9, weight decay 4e-5 (search and retrain).
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 4e-5
    # Architecture parameters: Adam, lr 1e-3, no weight decay, on the validation split.
    arch_lr: float = 1e-3
    arch_weight_decay: float = 0.0
    arch_update_every: int = 1  # the paper alternates every step; k > 1 is a cost lever
    gradient_estimator: Literal["two_path", "full"] = "two_path"
    flops_penalty: float = 0.0  # weight of expected GFLOPs in the architecture loss; 0 = the paper
    exit_patience: int = 0  # stop when the argmax held this many epochs (and entropy is low); 0 = off
    exit_entropy: float = 0.5
    retrain_schedule: Literal["cosine", "none"] = "cosine"

    def check(self, where: str) -> None:
        require_choice(self.scope, SCOPE_NAMES, "scope", where)
        super().check(where)
        for name in ("search_epochs", "retrain_epochs", "arch_update_every"):
            if getattr(self, name) < 1:
                raise SettingsError(f"{where}: {name} must be at least 1, got {getattr(self, name)}.")
        if self.width_multiplier <= 0:
            raise SettingsError(f"{where}: width_multiplier must be positive, got {self.width_multiplier}.")

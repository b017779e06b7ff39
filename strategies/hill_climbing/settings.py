"""Settings of a NASH hill-climbing search (Elsken et al.); defaults are the paper's CIFAR-10 run."""

from __future__ import annotations

from dataclasses import dataclass

from typing import Any

from search_spaces.edits.morphism_ops import MORPHISM_OPS

from ..data import Augment, DataSettings
from ..settings import SettingsError, parse_settings, require_choice

START_NETS = ("nash",)  # or a path to an ArchSpec JSON file


@dataclass(frozen=True)
class HillClimbingSettings(DataSettings):
    dataset: str = "cifar10"
    augment: Augment = "default"  # CIFAR: random crops + flips, the scheme of Loshchilov & Hutter the paper uses
    batch_size: int = 128
    # The start net: "nash" = conv-maxpool-conv-maxpool-conv-fc with `start_widths`, or an ArchSpec JSON path.
    start: str = "nash"
    start_widths: tuple[int, ...] = (64, 128, 256)
    pretrain_epochs: int = 20  # the start net is pretrained ~20 epochs
    n_steps: int = 5  # hill-climbing steps (the paper: 5 to 8)
    n_neighbours: int = 8  # children per step
    n_morphisms: int = 5  # morphisms applied to make one child
    epochs_neighbour: int = 17  # SGDR epochs per child
    epochs_final: int = 20  # the best net's final training
    lr_start: float = 0.05  # SGDR: cosine from lr_start to lr_end, restarted for every child
    lr_end: float = 0.0
    momentum: float = 0.9
    weight_decay: float = 5e-4
    morphisms: tuple[str, ...] = MORPHISM_OPS

    def check(self, where: str) -> None:
        super().check(where)
        for name in self.morphisms:
            require_choice(name, MORPHISM_OPS, "morphism", where)
        if not self.morphisms:
            raise SettingsError(f"{where}: morphisms must name at least one of {', '.join(MORPHISM_OPS)}.")
        for name in ("n_steps", "n_neighbours", "n_morphisms", "epochs_neighbour", "pretrain_epochs"):
            if getattr(self, name) < 1:
                raise SettingsError(f"{where}: {name} must be at least 1, got {getattr(self, name)}.")
        if self.epochs_final < 0:
            raise SettingsError(f"{where}: epochs_final must be 0 or more, got {self.epochs_final}.")
        if len(self.start_widths) != 3 or min(self.start_widths) < 1:
            raise SettingsError(f"{where}: start_widths must be three positive widths, got {list(self.start_widths)}.")
        if self.start not in START_NETS and not self.start.endswith(".json"):
            raise SettingsError(f"{where}: start must be 'nash' or the path of an ArchSpec .json file, got {self.start!r}.")


def parse_hill_climbing_args(class_args: dict[str, Any] | None, where: str = "tuner.classArgs") -> HillClimbingSettings:
    return parse_settings(HillClimbingSettings, class_args, where)

"""Settings of a NASH hill-climbing search (Elsken et al.); defaults are the paper's CIFAR-10 run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from search_spaces.edits.morphism_ops import DEFAULT_MORPHISM_OPS, MORPHISM_OPS
from search_spaces.pretrained_sources import SOURCE_FORMS, is_pretrained_source, source_problem
from search_spaces.spec import nash_start_spec
from trainers.datasets import dataset_entry

from ..data import Augment, DataSettings
from ..latency_budget import LatencySettings
from ..settings import ArtifactSettings, SettingsError, choices, parse_settings, require_choice

START_NETS = ("nash",)  # or a path to an ArchSpec JSON file, or a pretrained timm ResNet (timm:NAME, local-dir:PATH)
# hill_climbing: the paper's NASH; random_walk: its baseline without model selection (always move to a child).
Mode = Literal["hill_climbing", "random_walk"]
# How the neighbours of a step are trained: sgdr (cosine lr_start -> lr_end, restarted per neighbour) or the
# paper's ablation, a constant lr_start; the start net's pretraining and the final training are cosine either way.
NeighbourSchedule = Literal["sgdr", "constant"]
MODES, NEIGHBOUR_SCHEDULES = choices(Mode), choices(NeighbourSchedule)


@dataclass(frozen=True)
class HillClimbingSettings(ArtifactSettings, LatencySettings, DataSettings):
    # LatencySettings: latency_table, latency_target_ms (children predicted slower are redrawn, see tuner.py).
    dataset: str = "cifar10"
    augment: Augment = "default"  # CIFAR: random crops + flips, the scheme of Loshchilov & Hutter the paper uses
    batch_size: int = 128
    # The start net: "nash" = conv-maxpool-conv-maxpool-conv-fc with `start_widths`, an ArchSpec JSON path, or a
    # pretrained timm ResNet (timm:resnet18, local-dir:FOLDER, hf-hub:ID, timm:NAME@FILE; head fitted to the data).
    start: str = "nash"
    start_widths: tuple[int, ...] = (64, 128, 256)
    # The start net is pretrained ~20 epochs; a pretrained start may take 0 (evaluated as imported: the morphisms
    # keep its function, so its children start where it is).
    pretrain_epochs: int = 20
    mode: Mode = "hill_climbing"
    n_steps: int = 5  # hill-climbing steps (the paper: 5 to 8)
    # Jobs per step, the paper's n_neigh: hill_climbing trains n_neighbours - 1 children plus the current best
    # (retrained the same epochs, so it competes on equal terms); random_walk trains n_neighbours children
    # (the paper's baseline: 1) and moves to one of them at random.
    n_neighbours: int = 8
    n_morphisms: int = 5  # morphisms applied to make one child
    epochs_neighbour: int = 17  # epochs per neighbour
    epochs_final: int = 20  # the best net's final training
    lr_start: float = 0.05  # SGDR: cosine from lr_start to lr_end, restarted for every neighbour
    lr_end: float = 0.0
    neighbour_schedule: NeighbourSchedule = "sgdr"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    # The paper's three operator kinds (deeper, wider, skip); add "enlarge_kernel" for the kernel kind.
    morphisms: tuple[str, ...] = DEFAULT_MORPHISM_OPS
    # The paper trains its final nets on train + val; the final val accuracy is then reported as
    # train_val_accuracy (not held out). The test split is never trained on.
    final_on_train_and_val: bool = False
    # Snapshot ensemble: test accuracy of the mean softmax of the winners of the last k steps (0: none).
    ensemble_last: int = 0

    def check(self, where: str) -> None:
        super().check(where)
        for name in self.morphisms:
            require_choice(name, MORPHISM_OPS, "morphism", where)
        if not self.morphisms:
            raise SettingsError(f"{where}: morphisms must name at least one of {', '.join(MORPHISM_OPS)}.")
        for name in ("n_steps", "n_neighbours", "n_morphisms", "epochs_neighbour"):
            if getattr(self, name) < 1:
                raise SettingsError(f"{where}: {name} must be at least 1, got {getattr(self, name)}.")
        pretrained = is_pretrained_source(self.start)
        if self.pretrain_epochs < (0 if pretrained else 1):
            raise SettingsError(f"{where}: pretrain_epochs must be at least 1 (0 only for a pretrained start such as "
                                f"timm:resnet18), got {self.pretrain_epochs}.")
        if self.mode == "hill_climbing" and self.n_neighbours < 2:
            raise SettingsError(
                f"{where}: n_neighbours counts the retrained current best, so hill_climbing needs at least 2 to "
                f"try a child; for the paper's baseline without model selection set mode: random_walk."
            )
        if self.epochs_final < 0:
            raise SettingsError(f"{where}: epochs_final must be 0 or more, got {self.epochs_final}.")
        if not 0 <= self.ensemble_last <= self.n_steps:
            raise SettingsError(
                f"{where}: ensemble_last must be between 0 and n_steps ({self.n_steps}), got {self.ensemble_last}."
            )
        if len(self.start_widths) != 3 or min(self.start_widths) < 1:
            raise SettingsError(f"{where}: start_widths must be three positive widths, got {list(self.start_widths)}.")
        if pretrained:
            problem = source_problem(self.start)
            if problem:
                raise SettingsError(f"{where}: start {problem}")
        elif self.start not in START_NETS and not self.start.endswith(".json"):
            raise SettingsError(f"{where}: start must be 'nash', the path of an ArchSpec .json file or a pretrained "
                                f"network ({SOURCE_FORMS}), got {self.start!r}.")
        if self.start == "nash":  # other starts are read by the trial (a pretrained one needs torch)
            info = dataset_entry(self.dataset).info
            self.check_within_budget(nash_start_spec(info.num_classes, tuple(self.start_widths), info.in_channels),
                                     "the start net", where)


def parse_hill_climbing_args(class_args: dict[str, Any] | None, where: str = "tuner.classArgs") -> HillClimbingSettings:
    return parse_settings(HillClimbingSettings, class_args, where)

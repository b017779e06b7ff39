"""Settings of a ResBuilder layer-pruning search (Burghoff et al.); defaults are the paper's, tuned once on
CIFAR-10 and used for every dataset."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from search_spaces.pretrained_sources import SOURCE_FORMS, is_pretrained_source, source_problem

from ..data import Augment, DataSettings
from ..latency_budget import LatencySettings
from ..settings import ArtifactSettings, SettingsError, parse_settings

# RB-0Net (one conv, two pools, a dense layer), ResNet-18; or an ArchSpec JSON path, or a pretrained timm ResNet
# (timm:NAME, local-dir:PATH, hf-hub:ID, timm:NAME@FILE), its head fitted to the dataset
START_NETS = ("rb0", "rb_r18")
VARIANTS = ("with_reg", "no_reg_ri", "no_reg_wi")  # all terms; no extra terms from random init / from With Reg


@dataclass(frozen=True)
class LayerPruningSettings(ArtifactSettings, LatencySettings, DataSettings):
    # LatencySettings: latency_table, latency_target_ms (when given, the budget of MorphNet's step and the pick
    # instead of zeta).
    dataset: str = "cifar10"
    augment: Augment = "shift"  # 10% shifts (+ horizontal flips where labels allow them)
    batch_size: int = 64
    start: str = "rb0"
    start_width: int = 32  # RB-0Net's conv width (and the width of the blocks inserted into it)
    n_insertions: int = 4  # n_L: insertion steps before each MorphNet step
    n_morphnet: int = 7  # n_M: MorphNet steps (each ends one "morphing routine")
    epochs: int = 10  # With Reg epochs per pipeline step
    variant_epochs: int = 10  # No Reg RI / WI epochs per architecture
    lambda_morphnet: float = 1e-7  # lambda_M
    lambda_lasso: float = 1e-8  # lambda_L
    tau_lasso: float = 1e-3  # tau_L: a block with a conv whose mean |w| per weight falls below it is deleted
    # (the authors' code divides eq. 6's sum by the conv's weight count; a raw sum is ~1e4 x larger)
    weight_decay: float = 1e-5  # lambda_0, the extra L2 term
    zeta: float = 1e8  # FLOP budget of the MorphNet width step (1e9 for the paper's 300 px Animals10); unused
    # with latency_target_ms
    gamma_threshold: float = 1e-2  # a channel is alive while its BN |gamma| is above this
    lr: float = 1e-3  # Adam
    morphnet_only: bool = False  # ablation: no insertion, no LayerLasso (the paper's "MorphNet only" column)

    def check(self, where: str) -> None:
        super().check(where)
        if is_pretrained_source(self.start):
            problem = source_problem(self.start)
            if problem:
                raise SettingsError(f"{where}: start {problem}")
        elif self.start not in START_NETS and not self.start.endswith(".json"):
            raise SettingsError(
                f"{where}: start must be one of {', '.join(START_NETS)}, an ArchSpec .json path or a pretrained "
                f"network ({SOURCE_FORMS}), got {self.start!r}."
            )
        for name in ("start_width", "n_morphnet", "epochs", "variant_epochs"):
            if getattr(self, name) < 1:
                raise SettingsError(f"{where}: {name} must be at least 1, got {getattr(self, name)}.")
        if self.n_insertions < 0:
            raise SettingsError(f"{where}: n_insertions must be 0 or more, got {self.n_insertions}.")
        if self.zeta <= 0:
            raise SettingsError(f"{where}: zeta (the FLOP budget) must be positive, got {self.zeta}.")

    @property
    def insertions_per_routine(self) -> int:
        return 0 if self.morphnet_only else self.n_insertions


def parse_layer_pruning_args(class_args: dict[str, Any] | None, where: str = "tuner.classArgs") -> LayerPruningSettings:
    return parse_settings(LayerPruningSettings, class_args, where)

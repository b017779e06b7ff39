"""Settings of a stage-wise depth search (Jordao et al.); defaults are the paper's CIFAR-10 run, with the
numbers its text lost restated from the authors' code (main.py) and README."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from search_spaces.pretrained_sources import is_pretrained_source
from search_spaces.spec import ArchSpec, cifar_resnet_spec
from trainers.datasets import dataset_entry

from ..data import Augment, DataSettings
from ..latency_budget import LatencySettings
from ..settings import ArtifactSettings, SettingsError, choices, parse_settings
from .importance import CRITERIA, Criterion

# Which candidates get the paper's extra epochs: "every" iteration's grown net (Table III's it=1..5 rows), or
# only the "last" one, which the final job extends, tests and exports.
Extend = Literal["every", "last"]
EXTENDS = choices(Extend)


@dataclass(frozen=True)
class StagewiseSettings(ArtifactSettings, LatencySettings, DataSettings):
    # LatencySettings: latency_table, latency_target_ms (a stage grows only while the net stays within it).
    dataset: str = "cifar10"
    augment: Augment = "default"  # CIFAR: pad-4 random crops + horizontal flips, as in the authors' code
    batch_size: int = 128
    # One stage of basic blocks per width, stride 2 between stages (not read with a timm donor: its own widths).
    widths: tuple[int, ...] = (16, 32, 64)
    start_depths: tuple[int, ...] = (6, 6, 6)  # the paper's start (its "ResNet39"); Table I tried 2..10
    delta: int = 2  # blocks a stage grows by
    iterations: int = 5  # 2 * iterations + 1 candidates at most
    epochs: int = 200  # every candidate, from scratch (with a donor: the fine-tuning epochs, a few)
    # The candidate of each iteration is "further trained" this many epochs; we continue at the lr the schedule
    # ended on (lr * 0.1 ** len(milestones)): the paper does not say, and a restart would first undo training.
    extra_epochs: int = 100
    extend: Extend = "last"
    lr: float = 0.01  # SGD, Nesterov momentum
    momentum: float = 0.9
    weight_decay: float = 1e-4  # on conv and dense kernels (Keras l2(1e-4) on the convs in the authors' code)
    milestones: tuple[float, ...] = (0.5, 0.75)  # lr x0.1 at these fractions of a training (100, 150 of 200)
    criterion: Criterion = "pls"  # or inf_fs (unsupervised; Table II)
    n_components: int = 2  # PLS components
    score_samples: int | None = None  # training images scored per candidate (None: the whole training split)
    # The features scored: each stage's last residual sum, globally average-pooled (None), or averaged over
    # feature_pool x feature_pool windows with every cell kept (8: the authors' code, 4 x 4 cells at 32 px).
    feature_pool: int | None = None
    # Weight transfer (the paper's cheaper variant): every candidate starts from the first n_i blocks of each
    # stage of a deeper trained net of the same widths, a resnas timm export folder (or local-dir:FOLDER) or a job's
    # model.ckpt (with its arch.json beside it); or train_donor trains cifar_resnet(donor_depths) first, as one more
    # job. A pretrained timm ResNet (timm:resnet18, local-dir: of a save_for_hf folder) makes the searched networks
    # the donor's own (stem, blocks, widths, one start depth per donor stage), cut to n_i blocks (donor.py).
    donor: str | None = None
    train_donor: bool = False
    donor_depths: tuple[int, ...] = (18, 18, 18)  # ResNet-110
    donor_epochs: int = 200

    def check(self, where: str) -> None:
        super().check(where)
        if len(self.widths) < 1 or any(not isinstance(w, int) or w < 1 for w in self.widths):
            raise SettingsError(f"{where}: widths must be positive channel counts, got {list(self.widths)}.")
        for name in ("start_depths", "donor_depths"):
            depths = getattr(self, name)
            count, what = len(self.widths), "widths"
            if name == "start_depths" and self.timm_donor:  # the donor decides the stages, not `widths`
                count, what = len(self.max_depths), f"stages of the donor {self.donor}"
            if len(depths) != count or any(not isinstance(d, int) or d < 1 for d in depths):
                raise SettingsError(f"{where}: {name} must give a positive block count for each of the "
                                    f"{count} {what}, got {list(depths)}.")
        for name in ("delta", "iterations", "epochs", "n_components", "donor_epochs"):
            if getattr(self, name) < 1:
                raise SettingsError(f"{where}: {name} must be at least 1, got {getattr(self, name)}.")
        if self.extra_epochs < 0:
            raise SettingsError(f"{where}: extra_epochs must be 0 or more, got {self.extra_epochs}.")
        if any(not 0 < m < 1 for m in self.milestones) or list(self.milestones) != sorted(self.milestones):
            raise SettingsError(f"{where}: milestones are increasing fractions of a training between 0 and 1, "
                                f"got {list(self.milestones)}.")
        if self.criterion not in CRITERIA:
            raise SettingsError(f"{where}: criterion must be one of {', '.join(CRITERIA)}, got {self.criterion!r}.")
        if self.score_samples is not None and self.score_samples <= self.n_components:
            raise SettingsError(f"{where}: score_samples must exceed n_components ({self.n_components}), "
                                f"got {self.score_samples}.")
        if self.feature_pool is not None and self.feature_pool < 1:
            raise SettingsError(f"{where}: feature_pool must be a window size of 1 or more (or null for the "
                                f"global average), got {self.feature_pool}.")
        if self.donor is not None and self.train_donor:
            raise SettingsError(f"{where}: give either donor (a trained net) or train_donor: true, not both.")
        if self.donor is not None and not is_pretrained_source(self.donor) and not Path(self.donor).exists():
            raise SettingsError(f"{where}: donor {self.donor} does not exist; give a resnas timm export folder or a "
                                f"job's model.ckpt, or set train_donor: true.")
        limits = self.max_depths
        if limits is not None and any(s > d for s, d in zip(self.start_depths, limits)):
            raise SettingsError(f"{where}: start_depths {list(self.start_depths)} exceed the donor's depths "
                                f"{list(limits)}; a stage cannot be deeper than the donor's.")
        info = dataset_entry(self.dataset).info
        self.check_within_budget(self.network(self.start_depths, info.num_classes, info.in_channels),
                                 f"the start net {list(self.start_depths)}", where)

    @property
    def timm_donor(self) -> bool:
        """Whether the donor is a pretrained timm ResNet, whose own network the search then grows."""
        from .donor import is_timm_donor

        return is_timm_donor(self.donor)

    def network(self, depths: tuple[int, ...], num_classes: int, in_channels: int) -> ArchSpec:
        """The searched network of these stage depths: a CIFAR ResNet of `widths`, or with a timm donor the
        donor's network cut to the first depths[i] blocks of each stage."""
        if self.timm_donor:
            from .donor import prefix_spec, timm_donor_spec

            return prefix_spec(timm_donor_spec(self.donor, num_classes, in_channels), tuple(depths))
        return cifar_resnet_spec(tuple(depths), self.widths, num_classes, in_channels)

    @property
    def max_depths(self) -> tuple[int, ...] | None:
        """The donor's depths, which no stage may pass (weight transfer takes its first n_i blocks); None without
        a donor. Reads a given donor's ArchSpec JSON (no torch)."""
        if self.train_donor:
            return self.donor_depths
        if self.donor is not None:
            from .donor import donor_spec, timm_donor_spec  # donor.py raises this module's SettingsError

            if self.timm_donor:  # the depths alone: any classes and channels give them
                return timm_donor_spec(self.donor, 1, 3).depths
            return donor_spec(self.donor, self.widths).depths
        return None

    @property
    def transfers_weights(self) -> bool:
        return self.donor is not None or self.train_donor


def parse_stagewise_args(class_args: dict[str, Any] | None, where: str = "tuner.classArgs") -> StagewiseSettings:
    return parse_settings(StagewiseSettings, class_args, where)

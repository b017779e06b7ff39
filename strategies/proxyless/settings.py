"""Settings of one ProxylessNAS search-scope trial (defaults are the paper's CIFAR-10 Table I), and the search
loop's own config, derived from them in one place (`ProxylessSearchConfig.from_settings`).

No torch here: NNI's tuner process parses these, and NNI gives it 10 s to connect.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from search_spaces.choices import ScopeChoices
from search_spaces.pretrained_sources import SOURCE_FORMS, is_pretrained_source, source_architecture, source_problem
from search_spaces.scopes import (
    BASELINE_SCOPE,
    KERNEL_CANDIDATES,
    SCOPE_NAMES,
    searched_kernel_maps,
    smallest_image_size_for_kernels,
)

from trainers.speed import Precision, Switch

from ..data import Augment, DataSettings, input_size
from ..latency_budget import LatencySettings
from ..settings import SettingsError, choices, parse_settings, require_choice

GradientEstimator = Literal["two_path", "full"]
GRADIENT_ESTIMATORS = choices(GradientEstimator)
# The official ProxylessNAS latency losses (its `grad_reg_loss_type`), gate_latency.py:
#   mul#log:    CE * latency_alpha * (log E[LAT] / log latency_target_ms) ** latency_beta
#   add#linear: CE + latency_lambda * (E[LAT] - latency_target_ms) / latency_target_ms
LatencyLoss = Literal["mul#log", "add#linear"]
LATENCY_LOSSES = choices(LatencyLoss)
LatencyPick = Literal["within_target", "argmax"]
LATENCY_PICKS = choices(LatencyPick)
# The found path's retrain: from scratch (the paper), or fine-tuned from the start network's weights.
RetrainFrom = Literal["scratch", "start"]
RETRAIN_FROM = choices(RetrainFrom)


@dataclass(frozen=True)
class ProxylessSettings(LatencySettings, DataSettings):
    # LatencySettings: latency_table (measured on the target device; alone: latency reported, not searched for) and
    # latency_target_ms, the latency loss's target.
    # DataSettings: dataset (cifar10), data_dir, batch_size (64), val_fraction (0.1: architecture
    # steps use this held-out part of the training set), limits, num_workers, seed.
    scope: str = "m"  # s, m, l, f, or "none": the plain ResNet-50 of Table I, retrained without a search
    # Resized, as the paper's crops: 224 px puts ResNet-50's stages at 56/28/14/7, while CIFAR's native 32 px
    # would leave 2x2 and 1x1 maps under the 5x5 candidates (check() refuses that; None = native size).
    image_size: int | None = 224
    stem: Literal["imagenet", "cifar"] = "imagenet"  # the paper's counts match torchvision's 7x7 stem
    width_multiplier: float = 1.0
    # The paper: random crop + resize, horizontal flip p=0.5 (flips only where labels allow), normalisation.
    augment: Augment = "resized_crop"
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
    gradient_estimator: GradientEstimator = "two_path"
    flops_penalty: float = 0.0  # weight of expected GFLOPs in the architecture loss; 0 = the paper
    # With latency_table and latency_target_ms: the architecture loss of the official ProxylessNAS code, from the
    # expected latency under the gates (its defaults: alpha 0.2, beta 0.3, lambda 0.1).
    latency_loss: LatencyLoss = "mul#log"
    latency_alpha: float = 0.2
    latency_beta: float = 0.3
    latency_lambda: float = 0.1
    # The soft loss trades accuracy for latency and may end over the target. within_target: the argmax, then the
    # switches that give up the least gate probability per ms saved until within it (gate_latency.py); argmax: as is.
    latency_pick: LatencyPick = "within_target"
    exit_patience: int = 0  # stop when the argmax held this many epochs (and entropy is low); 0 = off
    exit_entropy: float = 0.5
    retrain_schedule: Literal["cosine", "none"] = "cosine"
    # A pretrained ResNet-50 to start from (timm:resnet50.a1_in1k, local-dir:FOLDER, hf-hub:ID, timm:NAME@FILE;
    # head and first conv fitted to the data): every candidate of the supernet takes its weights (a 5x5 candidate
    # the zero-padded 3x3), and scope none fine-tunes it (retrain_from: start). None: from scratch, the paper.
    start: str | None = None
    retrain_from: RetrainFrom = "scratch"  # start: the retrain fine-tunes the found path from the start's weights
    # top_architectures.json lists the k most probable paths under the final gates (argmax first), so a
    # runner-up can be exported (`resnas export --top`) without searching again.
    top_k: int = 5
    # Data-parallel search ranks (proxyless.distributed): None = one per visible GPU (NNI's trialGpuNumber k
    # gives the trial k), 1 on the CPU; k > 1 without GPUs runs k gloo ranks on the CPU. torchrun's world wins.
    world_size: int | None = None

    def scope_choices(self, num_classes: int, in_channels: int) -> ScopeChoices:
        """The searched decisions of this scope's ResNet-50 (stem, width) for a dataset's classes and channels."""
        return ScopeChoices.resnet50(self.scope, num_classes, self.stem, self.width_multiplier, in_channels)

    def check(self, where: str) -> None:
        require_choice(self.scope, (*SCOPE_NAMES, BASELINE_SCOPE), "scope", where)
        super().check(where)
        for name in ("search_epochs", "retrain_epochs", "arch_update_every", "top_k"):
            if getattr(self, name) < 1:
                raise SettingsError(f"{where}: {name} must be at least 1, got {getattr(self, name)}.")
        if self.world_size is not None and self.world_size < 1:
            raise SettingsError(f"{where}: world_size must be at least 1 (or null: one rank per GPU), got {self.world_size}.")
        if self.width_multiplier <= 0:
            raise SettingsError(f"{where}: width_multiplier must be positive, got {self.width_multiplier}.")
        self._check_kernels_fit(where)
        self._check_latency(where)
        self._check_start(where)

    def _check_start(self, where: str) -> None:
        """The start's syntax and files (no torch); the trial imports it and compares it with the space's base."""
        require_choice(self.retrain_from, RETRAIN_FROM, "retrain_from", where)
        if self.start is None:
            if self.retrain_from == "start":
                raise SettingsError(f"{where}: retrain_from start fine-tunes the start network's weights, and no "
                                    f"start is given; set start (e.g. timm:resnet50.a1_in1k) or retrain_from: scratch.")
            return
        if not is_pretrained_source(self.start):
            raise SettingsError(f"{where}: start must name a pretrained ResNet-50 ({SOURCE_FORMS}), got "
                                f"{self.start!r}.")
        problem = source_problem(self.start)
        if problem:
            raise SettingsError(f"{where}: start {problem}")
        architecture = source_architecture(self.start)  # None for hf-hub: the trial's import checks it
        if architecture is not None and architecture != "resnet50":
            raise SettingsError(f"{where}: start {self.start} is a timm {architecture}, and the search space is "
                                f"built around ResNet-50; start from a timm ResNet-50 (e.g. timm:resnet50.a1_in1k).")
        if self.stem != "imagenet" or self.width_multiplier != 1.0:
            # Every timm ResNet-50 has the 7x7/2 stem with max pool and 64..2048 channels: only this base fits.
            raise SettingsError(f"{where}: start {self.start} is a timm ResNet-50 (7x7/2 stem, width 1), and this "
                                f"search space has the {self.stem} stem and width_multiplier {self.width_multiplier}; "
                                f"set stem: imagenet and width_multiplier: 1 to start from it.")

    def _check_latency(self, where: str) -> None:
        require_choice(self.latency_loss, LATENCY_LOSSES, "latency_loss", where)
        require_choice(self.latency_pick, LATENCY_PICKS, "latency_pick", where)
        if self.latency_loss == "mul#log" and self.latency_target_ms is not None and self.latency_target_ms <= 1:
            # log(target) is 0 at 1 ms and negative below: the ratio of logs would blow up or flip its sign.
            raise SettingsError(f"{where}: latency_loss mul#log divides by log(latency_target_ms), which is not "
                                f"positive at {self.latency_target_ms} ms; use latency_loss add#linear, or a larger "
                                f"batch in the table.")
        for name in ("latency_alpha", "latency_beta", "latency_lambda"):
            if getattr(self, name) < 0:
                raise SettingsError(f"{where}: {name} must be 0 or more, got {getattr(self, name)}.")

    def _check_kernels_fit(self, where: str) -> None:
        """Refuse a searched kernel choice on a map smaller than the kernel: there the larger candidate's
        extra taps read mostly (at 1x1 or 2x2 only) zero padding, so its gate moves on noise (CIFAR's 32 px
        through the 7x7/s2 stem reaches stage 3 at 2x2 and stage 4 at 1x1)."""
        kernel = max(KERNEL_CANDIDATES)
        image_size = input_size(self)[1]  # image_size, else the dataset's native size
        for stage, block, side in searched_kernel_maps(self.scope, self.stem, image_size):
            if side < kernel:
                source = f"image_size {image_size}" if self.image_size else f"{self.dataset}'s native {image_size} px"
                smallest = smallest_image_size_for_kernels(self.scope, self.stem, kernel)
                raise SettingsError(
                    f"{where}: with the {self.stem} stem and {source}, scope {self.scope} searches a "
                    f"{kernel}x{kernel} kernel in layer{stage}.{block} on a {side}x{side} map, smaller than the "
                    f"kernel, so every window of it reads zero padding; set image_size to at least {smallest}."
                )


@dataclass(frozen=True)
class ProxylessSearchConfig:
    """What the search loop (proxyless.search) needs; usable on its own in benchmarks and tests."""

    # Weights: the paper's SGD (Nesterov, lr 0.05, momentum 0.9, weight decay 4e-5), cosine over the search.
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 4e-5
    # Architecture parameters: the paper's Adam, lr 1e-3, no weight decay (NNI 3.0 fixes DARTS's settings).
    arch_lr: float = 1e-3
    arch_weight_decay: float = 0.0
    # beta1 = 0, as the official ProxylessNAS: a candidate the two-path estimator did not sample gets a zero
    # gradient, and with momentum (beta1 = 0.9) Adam would still move it by its old gradients, breaking the
    # rescaling's promise that unsampled candidates keep their probability.
    arch_betas: tuple[float, float] = (0.0, 0.999)
    arch_update_every: int = 1
    # two_path: the official ProxylessNAS estimator, two candidates per choice and step, so its cost does
    # not grow with the number of candidates; "full" evaluates all of them (NNI's default).
    gradient_estimator: GradientEstimator = "two_path"
    flops_penalty: float = 0.0  # architecture loss += penalty * expected GFLOPs (differentiable in alpha)
    # A latency table and target turn on the latency loss (gate_latency.py; None: none).
    latency_table: str | None = None
    latency_target_ms: float | None = None
    latency_loss: LatencyLoss = "mul#log"
    latency_alpha: float = 0.2
    latency_beta: float = 0.3
    latency_lambda: float = 0.1
    input_size: tuple[int, int, int] = (3, 32, 32)
    total_epochs: int = 1
    seed: int = 0  # seeds the path sampler
    # Speed (trainers/speed.py): auto = 32 on the CPU, bf16-mixed (else 16-mixed) on CUDA; NHWC with CUDA + AMP.
    precision: Precision = "auto"
    channels_last: Switch = "auto"

    @classmethod
    def from_settings(cls, settings: ProxylessSettings, input_size: tuple[int, int, int]) -> "ProxylessSearchConfig":
        """Every field both classes name is taken from the settings (seed too); the rest is derived here."""
        shared: dict[str, Any] = {
            field.name: getattr(settings, field.name)
            for field in dataclasses.fields(cls)
            if hasattr(settings, field.name)
        }
        return cls(**shared, input_size=tuple(input_size), total_epochs=settings.search_epochs)


def parse_tuner_args(class_args: dict[str, Any] | None, where: str = "tuner.classArgs") -> list[ProxylessSettings]:
    """classArgs = ProxylessSettings keys, with `scopes: [s, m, ...]` allowed instead of `scope`."""
    class_args = dict(class_args or {})
    scopes = class_args.pop("scopes", None)
    if scopes is None:
        return [parse_settings(ProxylessSettings, class_args, where)]
    if "scope" in class_args:
        raise SettingsError(f"{where}: give either 'scope' or 'scopes', not both.")
    if not isinstance(scopes, list) or not scopes:
        raise SettingsError(f"{where}: scopes must be a non-empty list such as [s, m, l, f].")
    return [parse_settings(ProxylessSettings, {**class_args, "scope": scope}, where) for scope in scopes]

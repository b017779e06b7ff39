"""The measured jobs of benchmarks/gpu_check.py: one training of each paper config, timed over a few epochs.

Each job trains what the method's trial trains (same settings from nni_configs/*.yml, same optimiser, same extra
loss terms, same data path) on synthetic data of CIFAR-10's shape, for 1 warm-up epoch and `timed_epochs` timed
ones of `train_batches` training batches each, with validation batches in the proportion a CIFAR-10 epoch has
(5,000 validation images to 45,000 training images at val_fraction 0.1). A timed epoch's seconds x (the
epoch's training batches / train_batches) is the projected seconds of one real epoch.

fit() jobs are timed between the ends of consecutive epochs (its on_epoch_end callback: after the epoch's
validation, whose metrics it reads back from the device, so the GPU's queue is drained); the Trainer's own
start-up and the first epoch (cuDNN autotuning, allocator growth) are outside the timed epochs.
"""

from __future__ import annotations

import dataclasses
import math
import random
import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch

import nni_free
from search_spaces.builder import build_model
from search_spaces.choices import ScopeChoices
from search_spaces.cost import measure_cost
from search_spaces.edits.morphism_ops import draw_morphisms
from search_spaces.edits.resbuilder import insert_random_block, morphnet_width_step
from search_spaces.spec import ArchSpec, cifar_resnet_spec, nash_start_spec, resbuilder_start_spec
from strategies.data import input_size
from trainers import OptimConfig, fit
from trainers.datasets import DATASETS, DatasetEntry, dataset_entry, register_dataset
from trainers.speed import resolve_channels_last, resolve_precision

CIFAR10_TRAIN_IMAGES = 50_000  # the papers' dataset: every projection is of a CIFAR-10 run


@dataclass(frozen=True)
class Preset:
    name: str
    cifar_images: int  # synthetic 32 px images of the CIFAR-sized jobs' data set
    resized_images: int  # ... of the jobs resized to image_size (held as N x 3 x S x S bytes, resized as floats)
    image_size: int | None  # the ProxylessNAS jobs' input; None: the config's (224)
    # Training batches per timed epoch, for the 32 px jobs and for the resized ones: enough that the epoch's fixed
    # cost (Lightning's epoch hooks, the validation loader's start) is small beside the batches extrapolated.
    train_batches: dict[str, int]
    timed_epochs: int
    throughput_batches: dict[str, int]  # per network, training batches per round
    throughput_rounds: int
    budget_s: float
    reserve_s: float  # a job is skipped when less than this is left of the budget
    # Per method, settings replaced after the config is parsed (tiny: small nets, small batches).
    overrides: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    supernet_width: float | None = None  # the ProxylessNAS ResNet-50's width multiplier; None: the config's
    # The latency check (gpu_latency.py): spaces, architectures per space, batch size, a quick timer (tiny).
    latency: dict[str, Any] = dataclasses.field(default_factory=lambda: {
        "spaces": ("scope_m", "cifar_depth", "nash", "resbuilder"), "count": 5, "batch_size": 8, "quick": False})


PRESETS = {
    "full": Preset("full", cifar_images=16_384, resized_images=4_096, image_size=None,
                   train_batches={"cifar": 90, "resized": 30},
                   timed_epochs=2, throughput_batches={"resnet56": 40, "resnet50_224": 25}, throughput_rounds=3,
                   budget_s=420.0, reserve_s=15.0),
    "tiny": Preset("tiny", cifar_images=512, resized_images=128, image_size=64,
                   train_batches={"cifar": 2, "resized": 2}, timed_epochs=1,
                   throughput_batches={"resnet56": 2, "resnet50_224": 2}, throughput_rounds=1, budget_s=240.0,
                   reserve_s=1.0, supernet_width=0.0625,
                   latency={"spaces": ("cifar_depth", "resbuilder"), "count": 1, "batch_size": 1, "quick": True},
                   # channels_last and data_on_device forced on: the CPU then runs the paths CUDA's "auto" takes
                   overrides={method: {"channels_last": True, "data_on_device": True, **fields} for method, fields in {
                       "proxyless": {"batch_size": 8},
                       "hill_climbing": {"batch_size": 16, "start_widths": (8, 16, 32), "n_morphisms": 1, "n_steps": 2},
                       "layer_pruning": {"batch_size": 16, "start_width": 8, "n_insertions": 2, "zeta": 2e6},
                       "stagewise": {"batch_size": 16, "start_depths": (1, 1, 1), "iterations": 1, "widths": (8, 8, 8)},
                   }.items()}),
}


# ---- data -------------------------------------------------------------------------------------------------
def register_cifar_shaped(name: str, images: int) -> str:
    """CIFAR-10's facts (shape, classes, mean/std, flips, default augmentation) with random pixels."""
    def read(info, data_dir, train, download):
        generator = torch.Generator().manual_seed(0 if train else 1)
        count = images if train else max(64, images // 5)
        pixels = torch.randint(0, 256, (count, 3, 32, 32), generator=generator, dtype=torch.uint8)
        return pixels, torch.randint(0, 10, (count,), generator=generator)

    if name not in DATASETS:
        info = dataclasses.replace(dataset_entry("cifar10").info, name=name, expected_path="")
        register_dataset(DatasetEntry(info, read))
    return name


def synthetic_dataset(preset: Preset, resized: bool) -> str:
    """The registered name of the preset's 32 px data set, or of its smaller one for the jobs resized up."""
    name = f"gpu_check_{'resized' if resized else 'cifar'}_{preset.name}"
    return register_cifar_shaped(name, preset.resized_images if resized else preset.cifar_images)


def synthetic(settings, preset: Preset, resized: bool = False):
    return dataclasses.replace(settings, dataset=synthetic_dataset(preset, resized), data_dir="data")


# ---- timing -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EpochPlan:
    """The batches of a timed epoch and the real CIFAR-10 epoch they stand for."""

    batch_size: int
    epoch_train_batches: int
    epoch_val_batches: int
    train_batches: int
    val_batches: int

    @classmethod
    def of(cls, settings, preset: Preset, datamodule) -> "EpochPlan":
        resized = datamodule.image_size > datamodule.info.image_size
        available_train_batches = len(datamodule.train_dataloader())
        train_images = round(CIFAR10_TRAIN_IMAGES * (1 - settings.val_fraction))
        val_images = CIFAR10_TRAIN_IMAGES - train_images
        epoch_train = math.ceil(train_images / settings.batch_size)
        epoch_val = math.ceil(val_images / settings.batch_size)
        train_batches = max(1, min(preset.train_batches["resized" if resized else "cifar"], available_train_batches))
        val_batches = max(1, round(train_batches * epoch_val / epoch_train))
        return cls(settings.batch_size, epoch_train, epoch_val, train_batches, val_batches)

    def result(self, seconds: list[float]) -> dict[str, Any]:
        per_epoch = statistics.median(seconds)
        return {
            "epoch_seconds": round(per_epoch * self.epoch_train_batches / self.train_batches, 3),
            "images_per_second": round(self.train_batches * self.batch_size / per_epoch, 1),
            "how": f"{len(seconds)} timed epoch(s) of {self.train_batches} training + {self.val_batches} validation "
                   f"batches of {self.batch_size}, extrapolated to {self.epoch_train_batches} + "
                   f"{self.epoch_val_batches} (CIFAR-10's epoch)",
            "timed_epoch_seconds": [round(s, 4) for s in seconds],
        }


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed_fit(spec: ArchSpec, datamodule, settings, optim: OptimConfig, preset: Preset, device: torch.device,
              extra_losses=()) -> dict[str, Any]:
    """fit() of build_model(spec) as the method's trial calls it, 1 + timed_epochs epochs; the timed ones are
    projected to CIFAR-10's epoch."""
    plan = EpochPlan.of(settings, preset, datamodule)
    stamps: list[float] = []
    fit(build_model(spec), datamodule, optim, 1 + preset.timed_epochs, extra_losses=extra_losses, seed=settings.seed,
        on_epoch_end=lambda epoch, metrics: stamps.append(time.perf_counter()),
        accelerator="gpu" if device.type == "cuda" else "cpu", limit_train_batches=plan.train_batches,
        limit_val_batches=plan.val_batches, precision=settings.precision, channels_last=settings.channels_last)
    seconds = [later - earlier for earlier, later in zip(stamps, stamps[1:])]
    cost = measure_cost(spec, (3, datamodule.image_size, datamodule.image_size))
    precision = resolve_precision(settings.precision, device)
    return {**plan.result(seconds), "params": cost.params, "forward_gflops_per_image": round(cost.flops / 1e9, 4),
            "precision": precision, "channels_last": resolve_channels_last(settings.channels_last, device, precision),
            "data_on_device": datamodule.on_device}


# ---- the paper configs ------------------------------------------------------------------------------------
def proxyless_settings(config: dict, preset: Preset):
    settings = nni_free.load("strategies.proxyless.settings").parse_tuner_args(config)[0]
    settings = synthetic(dataclasses.replace(settings, **preset.overrides.get("proxyless", {})), preset, resized=True)
    if preset.image_size:  # replace() skips check(): the tiny size is below what the 5x5 candidates need
        settings = dataclasses.replace(settings, image_size=preset.image_size)
    if preset.supernet_width:
        settings = dataclasses.replace(settings, width_multiplier=preset.supernet_width)
    return settings


def proxyless_search(settings, scope: str, datamodule, preset: Preset, device: torch.device) -> dict[str, Any]:
    """ProxylessSearch.run_epoch (a weight step per training batch, an architecture step on a validation batch
    every arch_update_every-th, the epoch's evaluation) on the gated ResNet-50 of `scope`."""
    search_module = nni_free.load("strategies.proxyless.search")
    config_class = nni_free.load("strategies.proxyless.settings").ProxylessSearchConfig
    info = datamodule.info
    model, bank = nni_free.gated_scoped_resnet50(scope, info.num_classes, settings.stem, settings.width_multiplier,
                                                 info.in_channels)
    config = config_class.from_settings(settings, input_size(settings))
    search = search_module.ProxylessSearch(model, config, device, bank=bank)
    train_loader, val_loader = datamodule.train_dataloader(), datamodule.val_dataloader()
    plan = EpochPlan.of(settings, preset, datamodule)
    seconds = []
    for epoch in range(1 + preset.timed_epochs):
        started = time.perf_counter()
        search.run_epoch(train_loader, val_loader, plan.train_batches, plan.val_batches)
        synchronize(device)
        if epoch:
            seconds.append(time.perf_counter() - started)
    return {**plan.result(seconds), "gated_labels": len(bank.labels), "precision": search.precision,
            "channels_last": search.channels_last, "data_on_device": datamodule.on_device,
            "params": sum(p.numel() for p in model.parameters())}


def proxyless_retrain_spec(settings, costliest: bool) -> ArchSpec:
    """The plain ResNet-50 (Table I's baseline, and every path's cost floor) or scope f's costliest path (every
    block 5x5 with Mish), the retrain cost's ceiling."""
    choices = ScopeChoices.resnet50("f" if costliest else "s", 10, settings.stem, settings.width_multiplier)
    if not costliest:
        return choices.base_spec
    sample = {label: values[-1] for label, values in choices.choice_labels()}  # k5; mish is the last activation
    return choices.to_spec(sample)


def proxyless_retrain(settings, spec: ArchSpec, datamodule, preset: Preset, device: torch.device) -> dict[str, Any]:
    # As strategies/proxyless/trial.py::retrain_optim, which cannot be imported without NNI (trial.py imports
    # search_spaces.spaces.ScopedResNet50 at module level).
    optim = OptimConfig(optimizer="sgd", lr=settings.lr, momentum=settings.momentum, nesterov=True,
                        weight_decay=settings.weight_decay, schedule=settings.retrain_schedule)
    return timed_fit(spec, datamodule, settings, optim, preset, device)


def method_settings(method: str, parse: str, config: dict, preset: Preset):
    settings = getattr(nni_free.load(f"strategies.{method}.settings"), parse)(config)
    return synthetic(dataclasses.replace(settings, **preset.overrides.get(method, {})), preset)


def nash_specs(settings) -> dict[str, ArchSpec]:
    """The start net, the first step's first child, and the last step's first child on the path where every step's
    first child wins: n_morphisms morphisms per step, drawn with the tuner's seeds (`seed:step:child`)."""
    specs = {"start": nash_start_spec(10, tuple(settings.start_widths), 3)}
    spec = specs["start"]
    for step in range(settings.n_steps):
        _, spec = draw_morphisms(spec, settings.n_morphisms, random.Random(f"{settings.seed}:{step}:0"),
                                 settings.morphisms)
        if step == 0:
            specs["child_first"] = spec
    specs["child_last"] = spec
    return specs


def nash_job(settings, spec: ArchSpec, datamodule, preset: Preset, device: torch.device) -> dict[str, Any]:
    trial = nni_free.load("strategies.hill_climbing.trial")
    return timed_fit(spec, datamodule, settings, trial.job_optim(settings, "child"), preset, device)


def resbuilder_spec(settings) -> ArchSpec:
    """RB-0Net with n_insertions random blocks, then a MorphNet width step (fresh BN scales: every channel alive,
    widths scaled to the FLOP budget zeta): the size every pipeline step after the first routine trains at."""
    spec = resbuilder_start_spec(10, settings.start_width, 3)
    state = build_model(spec).state_dict()
    rng = random.Random(settings.seed)
    for _ in range(settings.n_insertions):
        spec, state, _ = insert_random_block(spec, state, rng)
    spec, _, _ = morphnet_width_step(spec, state, input_size(settings), settings.zeta, settings.gamma_threshold)
    return spec


def resbuilder_job(settings, spec: ArchSpec, with_reg: bool, datamodule, preset: Preset,
                   device: torch.device) -> dict[str, Any]:
    trial = nni_free.load("strategies.layer_pruning.trial")
    # As strategies/layer_pruning/trial.py::_job (inline there): Adam, L2 on the kernels only, no schedule.
    optim = OptimConfig(optimizer="adam", lr=settings.lr, weight_decay=settings.weight_decay,
                        weight_decay_on="kernels", schedule="none")
    extra = trial._regularizers(spec, settings) if with_reg else []
    return {**timed_fit(spec, datamodule, settings, optim, preset, device, extra_losses=extra),
            "extra_losses": [name for name, _ in extra]}


def stagewise_depths(settings) -> dict[str, tuple[int, ...]]:
    """The start net and the deepest net the search can reach (every stage grown every iteration)."""
    deepest = tuple(depth + settings.delta * settings.iterations for depth in settings.start_depths)
    return {"start": tuple(settings.start_depths), "deepest": deepest}


def stagewise_job(settings, depths: tuple[int, ...], datamodule, preset: Preset,
                  device: torch.device) -> dict[str, Any]:
    trial = nni_free.load("strategies.stagewise.trial")
    spec = cifar_resnet_spec(depths, tuple(settings.widths), 10, 3)
    return {**timed_fit(spec, datamodule, settings, trial.candidate_optim(settings, settings.epochs),
                        preset, device), "depths": list(depths), "blocks": sum(depths)}


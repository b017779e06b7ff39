"""The benchmark's presets: each pair's method settings (its classArgs) and the data every pair shares.

cpu: scikit-learn's digits on 2 CPU cores, every network tiny (16 px, widths 8/16/32, a few epochs), the
ProxylessNAS pair at 33 px (the smallest size at which the cifar stem leaves the scope's 5x5 kernels real
pixels) and 1/16 width; about 25 minutes of one core for 3 seeds (estimated from each method's run alone).
smoke: the same, shortened to prove the pipeline end to end (about 1 minute for one seed). cifar10: the papers'
layouts, recipes and input sizes on one GPU with the search lengths cut (the papers' own run for days); never
run on the CPU machines.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

PAIRS: tuple[str, ...] = ("stagewise", "nash", "proxyless", "resbuilder")  # the order they run in: the priority


@dataclass(frozen=True)
class Preset:
    name: str
    data: dict[str, Any]  # DataSettings keys every pair shares (dataset, image_size, augment, batch_size, ...)
    stagewise: dict[str, Any]  # StagewiseSettings keys beyond the data
    hill_climbing: dict[str, Any]  # HillClimbingSettings keys
    layer_pruning: dict[str, Any]  # LayerPruningSettings keys
    proxyless: dict[str, Any]  # ProxylessSettings keys; its image_size wins over the data's (see pair_settings)
    kendall_paths: int = 20  # supernet paths also trained stand-alone, for Kendall's tau (first seed only)
    supernet_paths: int = 20  # random paths the weight-sharing random search scores on the supernet
    max_trials: int = 50  # a random or TPE search stops here even with budget left
    overrides: dict[str, Any] = field(default_factory=dict)  # --dataset, --data-dir, --image-size

    def pair_settings(self, method: str, seed: int) -> dict[str, Any]:
        """The method's settings for one seed: the preset's data, the command line's overrides, its own keys."""
        own = {"stagewise": self.stagewise, "hill_climbing": self.hill_climbing,
               "layer_pruning": self.layer_pruning, "proxyless": self.proxyless}[method]
        settings = {**self.data, **self.overrides, **own, "seed": seed}
        if "dataset" in self.overrides and self.overrides["dataset"] != self.data.get("dataset"):
            settings.pop("data_on_device", None)  # another dataset may be read from folders: its default (auto)
        if method == "proxyless" and "image_size" in self.overrides:
            settings["image_size"] = max(self.overrides["image_size"] or 0, own.get("image_size") or 0) or None
        return settings

    def with_overrides(self, **values: Any) -> "Preset":
        return replace(self, overrides={key: value for key, value in values.items() if value is not None})


# data_on_device on the CPU too: digits' pixels stay one tensor and batches are shifted as a whole
# (trainers/device_data.py), 3-5x faster per epoch than per-image transforms for these tiny networks.
_DIGITS = {"dataset": "digits", "image_size": 16, "augment": "shift", "batch_size": 64, "num_workers": 0,
           "data_on_device": True}

CPU = Preset(
    name="cpu",
    data=_DIGITS,
    # the quick config at widths 8/16/32: ~5 candidates of 8 epochs and 2 extension epochs (~30 s of one core)
    stagewise={"widths": [8, 16, 32], "start_depths": [1, 1, 1], "delta": 1, "iterations": 2, "epochs": 8,
               "extra_epochs": 2, "lr": 0.1},
    # the quick config at widths 8/16/32: 4 + 3 steps x 4 neighbours x 3 + 4 epochs (~20 s)
    hill_climbing={"start": "nash", "start_widths": [8, 16, 32], "pretrain_epochs": 4, "n_steps": 3,
                   "n_neighbours": 4, "n_morphisms": 2, "epochs_neighbour": 3, "epochs_final": 4},
    # one morphing routine (2 insertions + 1 MorphNet step): 4 steps x (With Reg + 2 No Reg) x 3 epochs (~15 s);
    # the start net (74 kFLOPs) trained with that budget runs a few hundred epochs (~40 s)
    layer_pruning={"start": "rb0", "start_width": 16, "normalize": "unit", "n_insertions": 2, "n_morphnet": 1,
                   "epochs": 3, "variant_epochs": 3, "zeta": 5.0e5},
    # ResNet-50 at 1/16 width, 33 px: a retrain (4 epochs, batch 32, lr 0.1) takes ~15 s of one core and reaches
    # ~0.6 (lr 0.05 or batch 64 train slower); the 20 stand-alone trainings of Kendall's tau make this the
    # preset's most expensive pair (~12 of its ~25 minutes)
    proxyless={"scope": "s", "image_size": 33, "stem": "cifar", "width_multiplier": 0.0625, "batch_size": 32,
               "lr": 0.1, "search_epochs": 4, "retrain_epochs": 4, "arch_lr": 0.05},
)

SMOKE = replace(
    CPU,
    name="smoke",
    stagewise={**CPU.stagewise, "iterations": 1, "epochs": 2, "extra_epochs": 1},
    hill_climbing={**CPU.hill_climbing, "pretrain_epochs": 1, "n_steps": 1, "n_neighbours": 2, "epochs_neighbour": 1,
                   "epochs_final": 1},
    layer_pruning={**CPU.layer_pruning, "n_insertions": 1, "epochs": 1, "variant_epochs": 1},
    proxyless={**CPU.proxyless, "search_epochs": 1, "retrain_epochs": 1, "limit_train_batches": 6,
               "limit_val_batches": 3},
    kendall_paths=4,
    supernet_paths=6,
    max_trials=4,
)

# The papers' layouts, recipes and input sizes (nni_configs/{stagewise,hill_climbing,layer_pruning,
# proxyless_scope_m}.yml) with shorter searches so that one pair's method and baselines over 3 seeds fit in
# about a day of one GPU each (an estimate: not run here).
CIFAR10 = Preset(
    name="cifar10",
    data={"dataset": "cifar10", "batch_size": 128},
    stagewise={"augment": "crop", "widths": [16, 32, 64], "start_depths": [3, 3, 3], "delta": 2, "iterations": 3,
               "epochs": 40, "extra_epochs": 20, "lr": 0.01, "weight_decay": 1e-4},
    hill_climbing={"start": "nash", "start_widths": [64, 128, 256], "pretrain_epochs": 20, "n_steps": 5,
                   "n_neighbours": 8, "n_morphisms": 5, "epochs_neighbour": 17, "epochs_final": 20,
                   "lr_start": 0.05, "lr_end": 0.0},
    layer_pruning={"augment": "shift", "start": "rb0", "n_insertions": 4, "n_morphnet": 3, "epochs": 10,
                   "variant_epochs": 10, "zeta": 1.0e8, "lr": 1e-3},
    proxyless={"scope": "m", "image_size": 224, "batch_size": 64, "search_epochs": 40, "retrain_epochs": 40,
               "augment": "resized_crop"},
)

PRESETS: dict[str, Preset] = {preset.name: preset for preset in (CPU, SMOKE, CIFAR10)}

"""The networks whose parts a latency table needs before an experiment's search runs, read from its config:
`resnas latency-table TABLE --config nni_configs/X.yml` measures them on the target device, so a search that runs
elsewhere (a GPU cluster searching for a CPU deployment) predicts from measurements only.

ProxylessNAS: every (kernel, activation) candidate at every searched position of its space (the supernet's
expected latency reads them all). The multi-trial methods: their start net (the stage-wise one at depth 2 or more
per stage, which holds a stage's first block and its later ones); the parts their children add are estimated by
the tuner and measured by each child's trial on the table's device.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from search_spaces.spec import ArchSpec
from trainers.datasets import dataset_entry

from .data import input_size
from .methods import method_of_tuner
from .settings import SettingsError

Shape = tuple[int, int, int]


def config_networks(path: Path) -> tuple[list[ArchSpec], Shape]:
    """(networks, input size) of the experiment config at `path`; SettingsError names what cannot be read."""
    try:
        config = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise SettingsError(f"cannot read the experiment config {path} ({error}); give an nni_configs/*.yml file.") \
            from None
    tuner: dict[str, Any] = config.get("tuner") or {}
    method = method_of_tuner(str(tuner.get("className", "")))
    if method is None or method.parse_class_args is None:
        raise SettingsError(f"{path} runs no resnas method (tuner.className {tuner.get('className')!r}); for NNI's "
                            f"built-in tuners fill the table with --arch or let the trials measure their networks.")
    parsed = method.parse_class_args(tuner.get("classArgs"), f"{path}: tuner.classArgs")
    networks, size = [], None
    for settings in parsed if isinstance(parsed, list) else [parsed]:  # ProxylessNAS: one per scope of `scopes`
        info = dataset_entry(settings.dataset).info
        networks += _networks(method.name, settings, info.num_classes, info.in_channels)
        size = input_size(settings)
    return networks, size


def _networks(method: str, settings: Any, num_classes: int, in_channels: int) -> list[ArchSpec]:
    from search_spaces.latency_check import every_candidate

    if method == "proxyless":
        if settings.scope == "none":
            from .proxyless.start import base_spec

            return [base_spec(settings, dataset_entry(settings.dataset).info)]
        return every_candidate(settings.scope_choices(num_classes, in_channels))
    if method == "stagewise":  # depth 2 holds a stage's first block and its later ones (within a donor's depth)
        limits = settings.max_depths or [2] * len(settings.start_depths)
        depths = tuple(max(depth, min(2, limit)) for depth, limit in zip(settings.start_depths, limits))
        return [settings.network(depths, num_classes, in_channels)]
    if method == "hill_climbing":
        from .hill_climbing.trial import start_spec
    else:
        from .layer_pruning.trial import start_spec
    return [start_spec(settings)]

"""A ProxylessNAS trial from a pretrained ResNet-50 (settings.start): the import, checked against the search
space's base network, whose weights then initialise the supernet and (retrain_from: start) the found path.

The search space is ResNet-50 around its searched blocks (search_spaces.spaces.ScopedResNet50), so the start must
be that very network: a timm resnet50 (any weights), imported with its head and first conv fitted to the data.
"""

from __future__ import annotations

from search_spaces.scopes import BASELINE_SCOPE
from search_spaces.spaces.base_weights import require_base_network
from search_spaces.spec import ArchSpec, resnet_spec
from search_spaces.timm_import import ImportedNetwork, import_timm_resnet
from trainers.datasets import DatasetInfo

from .settings import ProxylessSettings

START_FIX = ("start from a timm ResNet-50 (timm:resnet50.a1_in1k, or local-dir: of a folder save_for_hf wrote from "
             "one) with stem: imagenet and width_multiplier: 1")


def base_spec(settings: ProxylessSettings, info: DatasetInfo) -> ArchSpec:
    """Table I's plain ResNet-50 (k3/ReLU everywhere): the network every scope searches around (ScopeChoices'
    base), with the settings' stem and width and the data's classes and channels."""
    return resnet_spec(50, num_classes=info.num_classes, stem=settings.stem, width_multiplier=settings.width_multiplier,
                       in_channels=info.in_channels)


def uses_start(settings: ProxylessSettings) -> bool:
    """Whether this trial reads the start network: a search initialises its supernet from it, and a retrain with
    retrain_from start fine-tunes from it (scope none with retrain_from scratch is the paper's baseline: unused)."""
    return settings.start is not None and (settings.scope != BASELINE_SCOPE or settings.retrain_from == "start")


def load_start(settings: ProxylessSettings, info: DatasetInfo) -> ImportedNetwork | None:
    """The start network fitted to the data, refused unless it is the search space's base network; None without a
    start (or where this trial does not use it)."""
    if not uses_start(settings):
        return None
    imported = import_timm_resnet(settings.start, num_classes=info.num_classes, in_channels=info.in_channels)
    require_base_network(imported.spec, base_spec(settings, info), settings.start, START_FIX)
    return imported


__all__ = ["START_FIX", "base_spec", "load_start", "uses_start"]

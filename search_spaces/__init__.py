"""Architecture descriptions, the model builder, cost, the timm export, NNI model spaces and edits.

Names load on first use (PEP 562, like trainers/__init__.py): `search_spaces.spec` imports no torch (tuners
read specs inside NNI's dispatcher, which must connect within 10 s; nor do pretrained_sources and latency_table),
and spec, builder, blocks, cost, export, latency, timm_entry and timm_import import neither NNI nor Lightning (an
exported model loads with torch and timm alone). NNI is imported only by `search_spaces.spaces`. `import
search_spaces.timm_entry` registers the `resnas_net` timm entry point.
"""

from __future__ import annotations

import importlib
from typing import Any

_NAMES = {
    "builder": ("ResNasNet", "build_model"),
    "cost": ("CostReport", "LayerCost", "measure_cost"),
    "errors": ("ExportError", "PretrainedError"),
    "export": ("export_to_timm", "load_exported", "plain_timm_resnet"),
    "latency_table": ("LatencyTable", "network_parts", "predict_latency"),
    "scopes": ("SCOPES",),
    "spaces": ("DepthResNet", "ScopedResNet50"),
    "spec": ("ArchSpec", "BlockSpec", "HeadSpec", "SpecError", "StageSpec", "StemSpec", "nash_start_spec",
             "resbuilder_start_spec", "resnet_spec"),
    "timm_entry": ("ENTRY_POINT",),
    "timm_import": ("ImportedNetwork", "import_timm_resnet"),
}
_MODULE_OF = {name: module for module, names in _NAMES.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'search_spaces' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_MODULE_OF[name]}", __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value

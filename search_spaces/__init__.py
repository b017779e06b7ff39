"""Architecture descriptions, the model builder, NNI model spaces, cost and the timm export."""

from .builder import ResNasNet, build_model
from .spec import (
    ArchSpec,
    BlockSpec,
    HeadSpec,
    SpecError,
    StageSpec,
    StemSpec,
    nash_start_spec,
    resbuilder_start_spec,
    resnet_spec,
)
from .nni_spaces import SCOPES, DepthResNet, ScopedResNet50
from .cost import CostReport, LayerCost, measure_cost
from .export import ENTRY_POINT, ExportError, export_to_timm, load_exported, plain_timm_resnet

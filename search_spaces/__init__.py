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
# -- nni spaces --
# -- export and cost --

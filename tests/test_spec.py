"""ArchSpec is the contract between every stage: JSON round trips, and bad specs fail with one clear sentence."""

import json
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from search_spaces.spec import (
    ACTIVATIONS,
    BLOCK_KINDS,
    WIDTH_COUNT,
    ArchSpec,
    BlockSpec,
    SpecError,
    StageSpec,
    StemSpec,
    nash_start_spec,
    resbuilder_start_spec,
    resnet_spec,
)


@pytest.mark.parametrize(
    "spec",
    [
        resnet_spec(18, num_classes=10),
        resnet_spec(34, num_classes=100, stem="cifar"),
        resnet_spec(50, num_classes=10, width_multiplier=0.25, in_channels=1),
        resbuilder_start_spec(),
        nash_start_spec(),
    ],
    ids=["resnet18", "resnet34-cifar", "resnet50-narrow", "rb0net", "nash-start"],
)
def test_json_round_trip(spec):
    assert ArchSpec.from_json(spec.to_json()) == spec
    assert json.loads(spec.to_json())["version"] == 1


block_kinds = st.sampled_from(BLOCK_KINDS)


@st.composite
def random_specs(draw):
    channels = draw(st.integers(1, 16))
    stem = StemSpec(out_channels=channels, kernel_size=draw(st.sampled_from([1, 3, 5, 7])), stride=draw(st.integers(1, 2)),
                    max_pool=draw(st.booleans()), activation=draw(st.sampled_from(ACTIVATIONS)))
    stages = []
    for _ in range(draw(st.integers(1, 4))):
        blocks = []
        for _ in range(draw(st.integers(0, 3))):
            kind = draw(block_kinds)
            widths = tuple(draw(st.integers(1, 16)) for _ in range(WIDTH_COUNT[kind]))
            stride = draw(st.integers(1, 2))
            projection = kind != "conv" and (stride != 1 or widths[-1] != channels)
            blocks.append(BlockSpec(kind, widths, draw(st.sampled_from([1, 3, 5])), draw(st.sampled_from(ACTIVATIONS)),
                                    stride, projection))
            channels = widths[-1]
        stages.append(StageSpec(tuple(blocks), draw(st.sampled_from(["none", "max", "avg"]))))
    return ArchSpec(stem=stem, stages=tuple(stages), in_channels=draw(st.integers(1, 4)))


@settings(max_examples=200, deadline=None)
@given(random_specs())
def test_json_round_trip_of_random_specs(spec):
    assert ArchSpec.from_json(spec.to_json()) == spec


def test_depths_and_channels_of_resnet50():
    spec = resnet_spec(50, num_classes=10)
    assert spec.depths == (3, 4, 6, 3)
    assert spec.stage_out_channels() == [256, 512, 1024, 2048]
    assert spec.num_features == 2048


def _block_error(**changes) -> str:
    spec = resnet_spec(18, num_classes=10)
    block = replace(spec.stages[1].blocks[1], **changes)
    with pytest.raises(SpecError) as error:
        spec.replace_block(2, 1, block)
    return str(error.value)


def test_unknown_activation_lists_the_valid_ones():
    message = _block_error(activation="swishy")
    assert "layer2.1" in message and "'swishy'" in message
    for name in ("relu", "leaky_relu", "mish"):
        assert name in message


@pytest.mark.parametrize("kernel_size", [2, 4, 0, -3])
def test_even_or_nonpositive_kernels_are_refused(kernel_size):
    assert "odd" in _block_error(kernel_size=kernel_size)


def test_zero_width_is_refused():
    assert "positive integer" in _block_error(widths=(128, 0))


def test_mismatched_shortcut_channels_are_refused():
    message = _block_error(widths=(128, 96))
    assert "mismatched channels" in message and "projection=True" in message


def test_wrong_width_count_is_refused():
    assert "needs 2 widths" in _block_error(widths=(128, 128, 128))


def test_unknown_key_in_json_names_the_valid_keys():
    data = json.loads(resnet_spec(18).to_json())
    data["stages"][0]["blocks"][0]["kernal_size"] = 3
    with pytest.raises(SpecError, match="unknown key 'kernal_size'.*kernel_size"):
        ArchSpec.from_dict(data)


def test_unknown_top_level_key_is_refused():
    data = json.loads(resnet_spec(18).to_json())
    data["stemm"] = data.pop("stem")
    with pytest.raises(SpecError, match="unknown key 'stemm'.*stem"):
        ArchSpec.from_dict(data)


def test_unsupported_version_is_refused():
    data = json.loads(resnet_spec(18).to_json())
    data["version"] = 99
    with pytest.raises(SpecError, match="version 99"):
        ArchSpec.from_dict(data)


def test_garbage_json_is_one_sentence():
    with pytest.raises(SpecError, match="does not parse"):
        ArchSpec.from_json("{not json")


def test_unknown_resnet_depth_and_stem():
    with pytest.raises(SpecError, match="18, 34, 50"):
        resnet_spec(42)
    with pytest.raises(SpecError, match="imagenet, cifar"):
        resnet_spec(50, stem="huge")


# ---- the resbuilder block kind (Burghoff et al.'s block: no activation after the sum) ---------------------------
# A spec JSON as schema version 1 wrote it before the resbuilder kind existed: it must load unchanged.
OLD_SPEC_JSON = """{"head": {"dropout": 0.0, "num_classes": 5}, "in_channels": 1,
 "stages": [{"blocks": [{"activation": "relu", "kernel_size": 3, "kind": "basic", "projection": false,
                          "stride": 1, "widths": [8, 8]}], "pool": "max"},
            {"blocks": [], "pool": "max"}],
 "stem": {"activation": "relu", "kernel_size": 3, "max_pool": false, "out_channels": 8, "stride": 1},
 "version": 1}"""


def rb0_with(block: BlockSpec) -> ArchSpec:
    spec = resbuilder_start_spec(num_classes=5, width=8)
    return replace(spec, stages=(replace(spec.stages[0], blocks=(block,)), spec.stages[1]))


def test_old_spec_json_loads_unchanged_and_keeps_its_basic_block():
    spec = ArchSpec.from_json(OLD_SPEC_JSON)
    assert spec.version == 1 and spec.stages[0].blocks[0].kind == "basic"
    assert json.loads(spec.to_json()) == json.loads(OLD_SPEC_JSON)


def test_a_resbuilder_block_round_trips_and_is_residual():
    spec = rb0_with(BlockSpec("resbuilder", (4, 8)))
    block = spec.stages[0].blocks[0]
    assert block.residual and block.out_channels == 8
    assert ArchSpec.from_json(spec.to_json()) == spec and json.loads(spec.to_json())["version"] == 1


def test_a_resbuilder_block_is_validated_like_a_basic_block():
    with pytest.raises(SpecError, match="a resbuilder block needs 2 widths, got 3"):
        rb0_with(BlockSpec("resbuilder", (8, 8, 8)))
    with pytest.raises(SpecError, match="mismatched channels.*set projection=True"):
        rb0_with(BlockSpec("resbuilder", (8, 6)))
    with pytest.raises(SpecError, match="mismatched channels"):
        rb0_with(BlockSpec("resbuilder", (8, 8), stride=2))
    assert rb0_with(BlockSpec("resbuilder", (8, 6), projection=True)).num_features == 6
    with pytest.raises(SpecError, match="unknown block kind 'resbuildr'; use one of .*resbuilder"):
        rb0_with(BlockSpec("resbuildr", (8, 8)))

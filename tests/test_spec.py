"""ArchSpec is the contract between every stage: JSON round trips, and bad specs fail with one clear sentence."""

import json
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from search_spaces.spec import (
    ACTIVATIONS,
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


block_kinds = st.sampled_from(["conv", "basic", "bottleneck"])


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
            widths = tuple(draw(st.integers(1, 16)) for _ in range({"conv": 1, "basic": 2, "bottleneck": 3}[kind]))
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

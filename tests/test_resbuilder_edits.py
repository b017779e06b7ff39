"""ResBuilder's edits: seeded near-identity insertion anywhere, LayerLasso removal that keeps the other blocks'
weights bit for bit, and MorphNet's width step (budget kept, next breakpoint breaks it, weights carried)."""

import random
from dataclasses import replace
from fractions import Fraction

import pytest
import torch

from search_spaces import BlockSpec, build_model, measure_cost, nash_start_spec, resbuilder_start_spec, resnet_spec
from search_spaces.edits.resbuilder import (
    INIT_MEAN_ABS,
    INSERTED_KIND,
    insert_random_block,
    morphnet_width_step,
    remove_small_blocks,
    scaled_widths,
    stream_width,
)
from search_spaces.edits.width_groups import spec_with_widths, width_groups


pytestmark = pytest.mark.usefixtures("one_thread_and_seeded")


def rb0_with_blocks(width: int = 6, depths: tuple[int, int] = (1, 2)):
    spec = resbuilder_start_spec(num_classes=5, width=width)
    block = BlockSpec("basic", (width, width))
    stages = tuple(replace(stage, blocks=(block,) * depth) for stage, depth in zip(spec.stages, depths))
    return replace(spec, stages=stages)


def tiny_resnet18(**kwargs):
    return resnet_spec(18, num_classes=5, stem="cifar", width_multiplier=0.125, **kwargs)


def loaded(spec, state_dict):
    model = build_model(spec)
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


def images(seed: int = 0, size: int = 16):
    return torch.randn(4, 3, size, size, generator=torch.Generator().manual_seed(seed))


# ---- insertion ----------------------------------------------------------------------------------------------
def test_insertion_is_seeded():
    spec = rb0_with_blocks()
    state = build_model(spec).state_dict()
    first, second = (insert_random_block(spec, state, random.Random(7)) for _ in range(2))
    assert first[0] == second[0] and first[2] == second[2]
    assert first[1].keys() == second[1].keys()
    assert all(torch.equal(first[1][key], second[1][key]) for key in first[1])


@pytest.mark.parametrize("spec", [rb0_with_blocks(), tiny_resnet18(), resbuilder_start_spec(num_classes=5, width=6)])
def test_insertion_reaches_every_stage_and_position_and_keeps_shapes(spec):
    state = build_model(spec).state_dict()
    places = {(stage, position) for stage in range(1, len(spec.stages) + 1)
              for position in range(len(spec.stages[stage - 1].blocks) + 1)}
    seen = set()
    for seed in range(150):
        new_spec, new_state, where = insert_random_block(spec, state, random.Random(seed))
        stage, position = where["stage"], where["position"]
        blocks = new_spec.stages[stage - 1].blocks
        width = stream_width(spec, stage, position)
        assert blocks[position] == BlockSpec("resbuilder", (width, width)) and where["width"] == width
        assert blocks[:position] + blocks[position + 1:] == spec.stages[stage - 1].blocks
        if (stage, position) not in seen:
            assert loaded(new_spec, new_state)(images()).shape == (4, 5)
        seen.add((stage, position))
    assert seen == places


def with_leaky_stem(spec):
    """A stream with negative values: a post-sum ReLU (the basic block's) would clip it, the paper's block not."""
    return replace(spec, stem=replace(spec.stem, activation="leaky_relu"))


def test_inserted_blocks_are_the_papers_block_with_no_activation_after_the_sum():
    spec = rb0_with_blocks()
    new_spec, _, where = insert_random_block(spec, build_model(spec).state_dict(), random.Random(3))
    assert INSERTED_KIND == "resbuilder"
    assert new_spec.stages[where["stage"] - 1].blocks[where["position"]].kind == "resbuilder"


@pytest.mark.parametrize("spec", [with_leaky_stem(rb0_with_blocks(width=8)), with_leaky_stem(tiny_resnet18()),
                                  resbuilder_start_spec(num_classes=5, width=8)])
def test_an_inserted_block_with_a_zero_bn2_weight_is_exactly_the_identity(spec):
    parent = build_model(spec, zero_init_last=False).eval()
    x = images(2)
    with torch.no_grad():
        reference = parent(x)
    for seed in range(6):
        new_spec, new_state, where = insert_random_block(spec, parent.state_dict(), random.Random(seed))
        key = f"layer{where['stage']}.{where['position']}.bn2.weight"
        new_state = {**new_state, key: torch.zeros_like(new_state[key])}
        with torch.no_grad():
            assert torch.equal(loaded(new_spec, new_state)(x), reference), where


@pytest.mark.parametrize("spec", [rb0_with_blocks(width=16), tiny_resnet18(), with_leaky_stem(rb0_with_blocks(16))])
def test_an_inserted_block_is_nearly_but_not_exactly_the_identity(spec):
    parent = build_model(spec, zero_init_last=False)
    state = parent.state_dict()
    x = images(1)
    for seed in range(5):
        new_spec, new_state, where = insert_random_block(spec, state, random.Random(seed))
        child = loaded(new_spec, new_state)
        # eval (running stats), then train mode: there the new bn2 sees unit-variance batch statistics, so its
        # ~1e-2 gammas add ~1% per block, which the nets behind it (up to 8 blocks in ResNet-18) amplify
        for mode, bound in ((False, 0.05), (True, 0.10)):
            parent.train(mode), child.train(mode)
            with torch.no_grad():
                reference, output = parent(x), child(x)
            change = float((output - reference).norm() / reference.norm())
            assert 0 < change < bound, (mode, where, change)
        prefix = f"layer{where['stage']}.{where['position']}"
        conv = new_state[f"{prefix}.conv1.weight"]
        assert conv.abs().mean() == pytest.approx(INIT_MEAN_ABS, rel=0.3) and conv.std() > 0  # random, not zero
        assert not torch.equal(new_state[f"{prefix}.conv1.weight"], new_state[f"{prefix}.conv2.weight"])
        assert 0 < new_state[f"{prefix}.bn2.weight"].abs().mean() < 5 * INIT_MEAN_ABS
        assert torch.equal(new_state[f"{prefix}.bn1.weight"], torch.ones_like(new_state[f"{prefix}.bn1.weight"]))
        assert not new_state[f"{prefix}.bn2.bias"].any() and not new_state[f"{prefix}.bn2.running_mean"].any()


# ---- removal ------------------------------------------------------------------------------------------------
def scaled_to_mean_abs(weight: torch.Tensor, mean_abs: float) -> torch.Tensor:
    return weight * (mean_abs / weight.abs().mean())


def test_removal_drops_exactly_the_blocks_below_tau_and_keeps_the_rest_bit_identical():
    spec = rb0_with_blocks(depths=(1, 3))
    state = build_model(spec, zero_init_last=False).state_dict()
    state["layer1.0.conv1.weight"] = state["layer1.0.conv1.weight"] * 1e-7
    state["layer2.1.conv2.weight"] = state["layer2.1.conv2.weight"] * 1e-7
    new_spec, new_state, removed = remove_small_blocks(spec, state, tau=1e-3)
    assert [(entry["stage"], entry["position"]) for entry in removed] == [(1, 0), (2, 1)]
    assert removed[0]["conv_mean_abs"][0] < 1e-3 < removed[0]["conv_mean_abs"][1]
    assert new_spec.depths == (0, 2)
    renamed = {"layer2.0.": "layer2.0.", "layer2.1.": "layer2.2."}  # new prefix: old prefix
    for key, tensor in new_state.items():
        old = next((old + key[len(new):] for new, old in renamed.items() if key.startswith(new)), key)
        assert torch.equal(tensor, state[old]), key
    assert len(new_state) == len(state) - 2 * len([k for k in state if k.startswith("layer1.0.")])
    loaded(new_spec, new_state)(images())

    assert remove_small_blocks(spec, state, tau=1e-12)[0] == spec  # nothing below a tiny tau


def test_blocks_with_a_projection_are_never_removed():
    spec = tiny_resnet18(stage_depths=(1, 1, 1, 1))
    state = build_model(spec).state_dict()
    for key in ("layer1.0.conv2.weight", "layer2.0.conv1.weight"):  # identity block, projection block
        state[key] = torch.zeros_like(state[key])
    new_spec, new_state, removed = remove_small_blocks(spec, state, tau=1e-3)
    assert [(entry["stage"], entry["position"]) for entry in removed] == [(1, 0)]
    assert new_spec.depths == (0, 1, 1, 1)
    loaded(new_spec, new_state)(images())


def test_removal_compares_the_mean_abs_weight_not_the_sum_with_tau():
    """Eq. (6) as the authors' code applies it: mean |w| per weight. An inserted 3x3 32->32 conv at mean |w|
    5e-4 sums to ~4.6, far above tau = 1e-3: a sum criterion would never remove it."""
    spec = rb0_with_blocks(width=32, depths=(1, 2))
    state = build_model(spec, zero_init_last=False).state_dict()
    state["layer1.0.conv2.weight"] = scaled_to_mean_abs(state["layer1.0.conv2.weight"], 5e-4)  # goes
    state["layer2.0.conv1.weight"] = scaled_to_mean_abs(state["layer2.0.conv1.weight"], 2e-3)  # stays
    assert float(state["layer1.0.conv2.weight"].abs().sum()) > 4  # 9,216 weights
    new_spec, _, removed = remove_small_blocks(spec, state, tau=1e-3)
    assert [(entry["stage"], entry["position"]) for entry in removed] == [(1, 0)]
    assert removed[0]["conv_mean_abs"][1] == pytest.approx(5e-4, rel=1e-4)
    assert new_spec.depths == (0, 2)


def test_a_freshly_inserted_block_is_not_removed_at_the_papers_tau():
    spec = rb0_with_blocks(width=16)
    new_spec, new_state, _ = insert_random_block(spec, build_model(spec).state_dict(), random.Random(0))
    assert remove_small_blocks(new_spec, new_state, tau=1e-3)[0] == new_spec  # mean |w| 1e-2 > tau


# ---- MorphNet width step ------------------------------------------------------------------------------------
def set_gamma(state, name, values):
    state[f"{name}.weight"] = torch.as_tensor(values, dtype=torch.float32)


def check_budget(new_spec, info, zeta, input_size):
    """FLOPs within zeta at omega; the next breakpoint changes a width and breaks the budget."""
    omega, next_omega = Fraction(info["omega_exact"]), Fraction(info["next_omega_exact"])
    assert info["omega"] == float(omega) and next_omega > omega
    assert measure_cost(new_spec, input_size).flops == info["flops_after"] <= zeta
    assert scaled_widths(info["alive_widths"], omega) == info["widths"]
    wider = scaled_widths(info["alive_widths"], next_omega)
    assert wider != info["widths"]
    assert measure_cost(spec_with_widths(new_spec, width_groups(new_spec), wider), input_size).flops > zeta


def rb0_with_gammas():
    """Stream channels 2 and 5 dead in every member, layer1.0 inner channels 0-2 dead, layer2.0 inner all dead."""
    spec = rb0_with_blocks(width=8, depths=(1, 2))
    state = build_model(spec, zero_init_last=False).state_dict()
    generator = torch.Generator().manual_seed(0)
    for name in ("bn1", "layer1.0.bn2", "layer2.0.bn2", "layer2.1.bn2"):
        gammas = torch.rand(8, generator=generator) + 0.05
        gammas[[2, 5]] = 0.0
        set_gamma(state, name, gammas)
    set_gamma(state, "layer1.0.bn1", [0.0, 1e-3, -1e-3, 0.5, -0.4, 0.3, 0.2, 0.9])
    set_gamma(state, "layer2.0.bn1", torch.zeros(8))
    set_gamma(state, "layer2.1.bn1", torch.rand(8, generator=generator) + 0.05)  # distinct: no top-k ties
    return spec, state


@pytest.mark.parametrize("budget", [1.0, 0.3])
def test_width_step_on_rb0_keeps_the_budget_and_the_surviving_weights(budget):
    spec, state = rb0_with_gammas()
    input_size = (3, 16, 16)
    zeta = budget * measure_cost(spec, input_size).flops
    new_spec, new_state, info = morphnet_width_step(spec, state, input_size, zeta, threshold=1e-2)
    assert info["removed_blocks"] == [{"stage": 2, "position": 0}] and new_spec.depths == (1, 1)
    assert info["alive_widths"] == {"bn1": 6, "layer1.0.bn1": 5, "layer2.0.bn1": 8}
    check_budget(new_spec, info, zeta, input_size)
    loaded(new_spec, new_state)(images())

    stream_scale = torch.stack([state[f"{n}.weight"].abs() for n in ("bn1", "layer1.0.bn2", "layer2.1.bn2")]).amax(0)
    inner_scale = state["layer1.0.bn1.weight"].abs()
    kept_stream = min(info["widths"]["bn1"], 6)
    kept_inner = min(info["widths"]["layer1.0.bn1"], 5)
    stream = torch.sort(stream_scale.topk(kept_stream).indices).values
    inner = torch.sort(inner_scale.topk(kept_inner).indices).values
    if budget == 1.0:  # omega >= 1: every alive channel survives
        assert info["omega"] >= 1
        assert stream.tolist() == [0, 1, 3, 4, 6, 7] and inner.tolist() == [3, 4, 5, 6, 7]
    else:
        assert info["omega"] < 1
    assert torch.equal(new_state["conv1.weight"][:kept_stream], state["conv1.weight"][stream])
    for key in ("weight", "bias", "running_mean", "running_var"):
        assert torch.equal(new_state[f"bn1.{key}"][:kept_stream], state[f"bn1.{key}"][stream])
    assert torch.equal(new_state["layer1.0.conv1.weight"][:kept_inner, :kept_stream],
                       state["layer1.0.conv1.weight"][inner][:, stream])
    assert torch.equal(new_state["layer1.0.conv2.weight"][:kept_stream, :kept_inner],
                       state["layer1.0.conv2.weight"][stream][:, inner])
    kept_last = min(info["widths"]["layer2.0.bn1"], 8)  # old layer2.1, renamed after layer2.0 went
    last = torch.sort(state["layer2.1.bn1.weight"].abs().topk(kept_last).indices).values
    assert torch.equal(new_state["layer2.0.conv1.weight"][:kept_last, :kept_stream],
                       state["layer2.1.conv1.weight"][last][:, stream])
    assert torch.equal(new_state["fc.weight"][:, :kept_stream], state["fc.weight"][:, stream])
    assert torch.equal(new_state["fc.bias"], state["fc.bias"])
    extra = info["widths"]["bn1"] - kept_stream  # fresh channels: BN at its defaults
    if extra:
        assert torch.equal(new_state["bn1.weight"][kept_stream:], torch.ones(extra))


def test_width_step_on_a_tiny_resnet18():
    spec = tiny_resnet18()
    input_size = (3, 16, 16)
    state = build_model(spec, zero_init_last=False).state_dict()
    generator = torch.Generator().manual_seed(1)
    for key in [key for key in state if key.endswith(".weight") and state[key].dim() == 1]:
        gammas = torch.rand(state[key].shape, generator=generator)
        gammas[gammas < 0.3] = 0.0
        state[key] = gammas
    state["layer1.1.bn1.weight"] = torch.zeros(8)  # identity block: removed
    state["layer2.0.bn1.weight"] = torch.zeros(16)  # projection block: stays, at least one channel wide
    zeta = 0.5 * measure_cost(spec, input_size).flops
    new_spec, new_state, info = morphnet_width_step(spec, state, input_size, zeta, threshold=1e-2)
    assert info["removed_blocks"] == [{"stage": 1, "position": 1}]
    assert new_spec.depths == (1, 2, 2, 2) and new_spec.stages[1].blocks[0].widths[0] >= 1
    assert info["alive_widths"]["layer2.0.bn1"] == 1
    check_budget(new_spec, info, zeta, input_size)
    assert loaded(new_spec, new_state)(images()).shape == (4, 5)


def test_an_impossible_budget_names_the_fix():
    spec, state = rb0_with_gammas()
    with pytest.raises(ValueError, match="raise zeta"):
        morphnet_width_step(spec, state, (3, 16, 16), zeta=10, threshold=1e-2)


@pytest.mark.parametrize("spec", [
    nash_start_spec(num_classes=5, widths=(4, 6, 8)),
    resnet_spec(50, num_classes=5, width_multiplier=0.0625, stage_depths=(2, 1, 1, 1)),
])
def test_width_step_on_conv_blocks_and_bottlenecks(spec):
    input_size = (3, 32, 32)
    state = build_model(spec, zero_init_last=False).state_dict()
    generator = torch.Generator().manual_seed(2)
    for key in [key for key in state if key.endswith(".weight") and state[key].dim() == 1]:
        state[key] = torch.rand(state[key].shape, generator=generator)
    zeta = 0.6 * measure_cost(spec, input_size).flops
    new_spec, new_state, info = morphnet_width_step(spec, state, input_size, zeta, threshold=1e-2)
    check_budget(new_spec, info, zeta, input_size)
    assert loaded(new_spec, new_state)(images(size=32)).shape == (4, 5)

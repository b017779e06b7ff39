"""NASH morphisms: every op (and chains of them) keeps the parent's function to 1e-5 with real BN statistics."""

import json
import random
from dataclasses import replace

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from search_spaces import build_model, nash_start_spec, resbuilder_start_spec, resnet_spec
from search_spaces.edits.morphism_ops import (
    DEFAULT_MORPHISM_OPS,
    MORPHISM_OPS,
    OPS,
    PAPER_KINDS,
    Morphism,
    MorphismError,
    applicable_sites,
    apply_to_spec,
    draw_morphism,
    draw_morphisms,
)
from search_spaces.edits.morphisms import apply_morphisms
from search_spaces.spec import WIDTH_COUNT, ArchSpec, BlockSpec, HeadSpec, StageSpec, StemSpec

torch.set_num_threads(1)
IMAGE_SIZE = 8  # three 2x reductions at most keep every feature map at least 1x1
TOLERANCE = 1e-5
ACTIVATIONS = ("relu", "relu", "relu", "leaky_relu", "silu", "identity")  # relu-heavy: deepen needs it


@st.composite
def small_specs(draw) -> ArchSpec:
    family = draw(st.sampled_from(("nash", "resbuilder", "resnet18", "hand", "hand")))
    if family == "nash":
        widths = tuple(draw(st.integers(4, 8)) for _ in range(3))
        return nash_start_spec(num_classes=3, widths=widths)
    if family == "resbuilder":
        return resbuilder_start_spec(num_classes=3, width=draw(st.integers(4, 8)))
    if family == "resnet18":
        return resnet_spec(18, num_classes=3, stem="cifar", width_multiplier=0.0625)
    reductions_left = 3
    max_pool = draw(st.booleans())
    reductions_left -= max_pool
    stem = StemSpec(draw(st.integers(3, 8)), 3, 1, max_pool, draw(st.sampled_from(ACTIVATIONS)))
    channels, stages = stem.out_channels, []
    for _ in range(draw(st.integers(1, 3))):
        pool = draw(st.sampled_from(("none", "max", "avg"))) if reductions_left else "none"
        reductions_left -= pool != "none"
        blocks = []
        for _ in range(draw(st.integers(0, 3))):
            kind = draw(st.sampled_from(("conv", "conv", "basic", "bottleneck", "resbuilder")))
            widths = tuple(draw(st.integers(2, 8)) for _ in range(WIDTH_COUNT[kind]))
            stride = draw(st.sampled_from((1, 1, 2))) if reductions_left else 1
            reductions_left -= stride == 2
            needs_projection = stride != 1 or channels != widths[-1]
            projection = kind != "conv" and (needs_projection or draw(st.booleans()))
            kernel_size = draw(st.sampled_from((3, 3, 5, 1)))
            activation = draw(st.sampled_from(ACTIVATIONS))
            blocks.append(BlockSpec(kind, widths, kernel_size, activation, stride, projection))
            channels = widths[-1]
        stages.append(StageSpec(tuple(blocks), pool))
    return ArchSpec(stem=stem, stages=tuple(stages), head=HeadSpec(num_classes=3))


def random_model(spec: ArchSpec, seed: int) -> torch.nn.Module:
    """A net with random weights AND random BN statistics, so carried-over statistics are exercised."""
    torch.manual_seed(seed)
    model = build_model(spec)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                sign = torch.randint(0, 2, module.weight.shape) * 2 - 1
                module.weight.copy_(torch.empty_like(module.weight).uniform_(0.5, 1.5) * sign)
                module.bias.normal_(0, 0.5)
                module.running_mean.normal_(0, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def child_of(spec: ArchSpec, model: torch.nn.Module, morphisms: list[Morphism]) -> tuple[ArchSpec, torch.nn.Module]:
    child_spec, state = apply_morphisms(spec, model.state_dict(), morphisms)
    child = build_model(child_spec)
    child.load_state_dict(state, strict=True)
    return child_spec, child.eval()


def assert_same_function(parent: torch.nn.Module, child: torch.nn.Module, seed: int) -> None:
    x = torch.randn(3, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        expected, actual = parent(x), child(x)
    scale = max(1.0, expected.abs().max().item())
    assert (actual - expected).abs().max().item() <= TOLERANCE * scale


# ---- function preservation (property-based) -------------------------------------------------------------
@pytest.mark.parametrize("op", MORPHISM_OPS)
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(spec=small_specs(), seed=st.integers(0, 2**16), data=st.data())
def test_every_op_preserves_the_function(op, spec, seed, data):
    if op == "add_skip":
        spec = with_a_run_of_two_conv_blocks(spec)
    sites = applicable_sites(spec, op)
    assume(sites)
    rng = random.Random(seed)
    morphism = draw_morphism(spec, rng, ops=(op,))
    assert morphism.op == op
    if op == "widen":  # also try an arbitrary site and width, not only the drawn one
        site = data.draw(st.sampled_from(sites))
        morphism = replace(site, new_width=data.draw(st.integers(1, 6)) + _width(spec, site), seed=seed)
    parent = random_model(spec, seed)
    child_spec, child = child_of(spec, parent, [morphism])
    assert child_spec == apply_to_spec(spec, morphism)
    assert_same_function(parent, child, seed)


def with_a_run_of_two_conv_blocks(spec: ArchSpec) -> ArchSpec:
    """Random specs rarely hold two matching conv blocks in a row; insert a second one (or a pair) where a
    deepen_conv applies, so that add_skip gets tested on most examples (all weights get re-randomised)."""
    if applicable_sites(spec, "add_skip"):
        return spec
    for site in applicable_sites(spec, "deepen_conv"):
        if site.block > 0:
            previous = spec.stages[site.stage - 1].blocks[site.block - 1]
            if previous.kind == "conv" and previous.activation == "relu":
                return apply_to_spec(spec, replace(site, kernel_size=previous.kernel_size))
    for site in applicable_sites(spec, "deepen_conv")[:1]:
        return apply_to_spec(apply_to_spec(spec, site), site)
    return spec


def _width(spec: ArchSpec, site: Morphism) -> int:
    if site.stage == 0:
        return spec.stem.out_channels
    return spec.stages[site.stage - 1].blocks[site.block].widths[site.width_index]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=small_specs(), seed=st.integers(0, 2**16))
def test_a_sequence_of_five_morphisms_preserves_the_function(spec, seed):
    morphisms, final_spec = draw_morphisms(spec, 5, random.Random(seed), MORPHISM_OPS)  # enlarge_kernel too
    parent = random_model(spec, seed)
    child_spec, child = child_of(spec, parent, morphisms)
    assert child_spec == final_spec
    assert_same_function(parent, child, seed)


def test_inputs_are_not_modified():
    spec = resnet_spec(18, num_classes=3, stem="cifar", width_multiplier=0.0625)
    state = random_model(spec, 0).state_dict()
    before = {key: value.clone() for key, value in state.items()}
    morphisms, _ = draw_morphisms(spec, 5, random.Random(1))
    apply_morphisms(spec, state, morphisms)
    assert state.keys() == before.keys() and all(torch.equal(state[key], before[key]) for key in state)


# ---- spec effects ---------------------------------------------------------------------------------------
def test_each_op_changes_the_spec_as_documented():
    spec = nash_start_spec(num_classes=3, widths=(4, 6, 8))
    deeper = apply_to_spec(spec, Morphism("deepen_conv", 2, 0, kernel_size=5))
    assert deeper.stages[1].blocks[0] == BlockSpec("conv", (6,), kernel_size=5)  # width of layer1's conv
    assert deeper.depths == (1, 2)
    residual = apply_to_spec(spec, Morphism("deepen_residual", 1, 1))
    assert residual.stages[0].blocks[1] == BlockSpec("basic", (6, 6)) and residual.depths == (2, 1)
    wider = apply_to_spec(spec, Morphism("widen", 1, 0, new_width=9))
    assert wider.stages[0].blocks[0].widths == (9,) and wider.stages[1] == spec.stages[1]
    assert apply_to_spec(spec, Morphism("widen", 0, 0, new_width=5)).stem.out_channels == 5
    two_5x5 = deeper.replace_block(2, 1, replace(deeper.stages[1].blocks[1], kernel_size=5))
    merged = apply_to_spec(two_5x5, Morphism("add_skip", 2, 0))
    assert merged.stages[1].blocks == (BlockSpec("basic", (6, 8), kernel_size=5, projection=True),)
    bigger = apply_to_spec(spec, Morphism("enlarge_kernel", 2, 0))
    assert bigger.stages[1].blocks[0].kernel_size == 5


def test_deepen_reads_the_sign_through_a_resbuilder_block():
    # x + relu(...) with no activation after the sum is non-negative exactly when its input x is
    block = BlockSpec("resbuilder", (4, 4))
    relu_fed = ArchSpec(stem=StemSpec(4, 3, 1, False, "relu"), stages=(StageSpec((block,)),), head=HeadSpec(3))
    leaky_fed = replace(relu_fed, stem=replace(relu_fed.stem, activation="leaky_relu"))
    assert Morphism("deepen_conv", 1, 1) in applicable_sites(relu_fed, "deepen_conv")
    assert [m.block for m in applicable_sites(leaky_fed, "deepen_conv")] == []
    # with a projection the shortcut BN(conv(x)) has any sign, so nothing may be deepened behind the block
    projected = replace(relu_fed, stages=(StageSpec((BlockSpec("resbuilder", (4, 6), projection=True),)),))
    assert [m.block for m in applicable_sites(projected, "deepen_conv")] == [0]
    parent = random_model(relu_fed, seed=1)
    for op in ("deepen_conv", "widen", "enlarge_kernel"):
        site = applicable_sites(relu_fed, op)[-1]
        site = replace(site, new_width=6) if op == "widen" else site
        assert_same_function(parent, child_of(relu_fed, parent, [site])[1], seed=2)


def test_widen_refuses_an_output_that_feeds_an_identity_shortcut():
    spec = resnet_spec(18, num_classes=3, stem="cifar", width_multiplier=0.0625)
    site = Morphism("widen", 2, 0, width_index=1, new_width=12)  # layer2.0 has a projection, layer2.1 not
    with pytest.raises(MorphismError, match="widenable indices"):
        apply_to_spec(spec, site)
    assert [site.width_index for site in applicable_sites(spec, "widen") if site.stage == 2] == [0, 0]


def test_widen_of_a_projected_residual_output_copies_the_projection_rows():
    spec = resnet_spec(18, num_classes=3, stem="cifar", width_multiplier=0.0625, stage_depths=(1, 1))
    parent = random_model(spec, 1)
    child_spec, child = child_of(spec, parent, [Morphism("widen", 2, 0, width_index=1, new_width=13, seed=4)])
    assert child_spec.stages[1].blocks[0].widths == (8, 13)
    assert child.get_submodule("layer2.0.downsample.0").weight.shape[0] == 13 and child.fc.weight.shape[1] == 13
    assert_same_function(parent, child, 1)


def test_morphism_json_round_trip():
    morphism = Morphism("widen", 1, 0, width_index=0, new_width=12, seed=7)
    assert Morphism.from_dict(json.loads(json.dumps(morphism.to_dict()))) == morphism


def test_errors_name_the_fix():
    spec = nash_start_spec(num_classes=3, widths=(4, 6, 8))
    with pytest.raises(MorphismError, match="deepen_conv, deepen_residual, widen, add_skip, enlarge_kernel"):
        Morphism.from_dict({"op": "split", "stage": 1, "block": 0})
    with pytest.raises(MorphismError, match="valid keys"):
        Morphism.from_dict({"op": "widen", "stage": 1, "block": 0, "width": 3})
    with pytest.raises(MorphismError, match="not both conv blocks|no following block"):
        apply_to_spec(spec, Morphism("add_skip", 1, 0))
    with pytest.raises(MorphismError, match="must exceed"):
        apply_to_spec(spec, Morphism("widen", 1, 0, new_width=6))
    silu = replace(spec, stem=replace(spec.stem, activation="silu"))
    with pytest.raises(MorphismError, match="non-negative"):
        apply_to_spec(silu, Morphism("deepen_conv", 1, 0))
    with pytest.raises(MorphismError, match="no block 3"):
        apply_to_spec(spec, Morphism("enlarge_kernel", 1, 3))


def test_draw_morphism_is_deterministic_under_a_seed():
    spec = nash_start_spec(num_classes=3, widths=(4, 6, 8))
    first = draw_morphisms(spec, 6, random.Random(42))
    assert first == draw_morphisms(spec, 6, random.Random(42))
    assert first != draw_morphisms(spec, 6, random.Random(43))


def _kind_frequencies(spec: ArchSpec, ops, draws: int = 3000) -> tuple[dict[str, float], dict[str, int]]:
    rng = random.Random(7)
    drawn = [draw_morphism(spec, rng, ops).op for _ in range(draws)]
    kinds = {kind: sum(OPS[op].kind == kind for op in drawn) / draws for kind in {OPS[op].kind for op in ops}}
    return kinds, {op: drawn.count(op) for op in MORPHISM_OPS}


def test_the_draw_picks_the_papers_three_kinds_uniformly_and_enlarge_kernel_only_on_request():
    spec = apply_to_spec(nash_start_spec(num_classes=3, widths=(4, 6, 8)), Morphism("deepen_conv", 1, 1))
    assert all(applicable_sites(spec, op) for op in MORPHISM_OPS)  # every kind has a site here
    assert DEFAULT_MORPHISM_OPS == tuple(op for op in MORPHISM_OPS if OPS[op].kind in PAPER_KINDS)
    assert {OPS[op].kind for op in DEFAULT_MORPHISM_OPS} == {"deeper", "wider", "skip"}

    kinds, ops = _kind_frequencies(spec, DEFAULT_MORPHISM_OPS)
    assert set(kinds) == {"deeper", "wider", "skip"}
    assert all(0.30 <= share <= 0.37 for share in kinds.values()), kinds  # deeper is no longer 2/5
    assert ops["enlarge_kernel"] == 0
    assert 0.4 <= ops["deepen_conv"] / (ops["deepen_conv"] + ops["deepen_residual"]) <= 0.6  # forms: uniform

    kinds, ops = _kind_frequencies(spec, MORPHISM_OPS)  # opted in: four kinds, a quarter each
    assert all(0.22 <= share <= 0.28 for share in kinds.values()) and len(kinds) == 4, kinds


def test_the_draw_skips_kinds_without_a_site():
    spec = nash_start_spec(num_classes=3, widths=(4, 6, 8))  # no two conv blocks in a row: no skip site
    kinds, ops = _kind_frequencies(spec, DEFAULT_MORPHISM_OPS, draws=1000)
    assert set(kinds) == {"deeper", "wider", "skip"} and kinds["skip"] == 0
    assert 0.44 <= kinds["deeper"] <= 0.56, kinds


def test_nash_start_sites():
    spec = nash_start_spec(num_classes=3, widths=(4, 6, 8))
    for op in MORPHISM_OPS:
        assert bool(applicable_sites(spec, op)) == (op != "add_skip"), op
    deeper = apply_to_spec(spec, Morphism("deepen_conv", 1, 1))
    assert applicable_sites(deeper, "add_skip") == [Morphism("add_skip", 1, 0)]


# ---- the child can learn --------------------------------------------------------------------------------
def _one_sgd_step(model: torch.nn.Module) -> None:
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(4, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(5))
    loss = torch.nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 2, 0]))
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(parameter).all() for parameter in model.parameters())


@pytest.mark.parametrize(
    "morphism",
    [
        Morphism("deepen_conv", 1, 1, kernel_size=5),
        Morphism("deepen_residual", 2, 0, seed=3),
        Morphism("widen", 1, 0, new_width=10, seed=3),
        Morphism("enlarge_kernel", 2, 0),
    ],
    ids=lambda morphism: morphism.op,
)
def test_the_child_of_each_op_trains(morphism):
    spec = nash_start_spec(num_classes=3, widths=(4, 6, 8))
    _, child = child_of(spec, random_model(spec, 0), [morphism])
    _one_sgd_step(child)


def test_add_skip_child_trains():
    spec = nash_start_spec(num_classes=3, widths=(4, 6, 8))
    morphisms = [Morphism("deepen_conv", 1, 1), Morphism("add_skip", 1, 0, seed=2)]
    parent = random_model(spec, 0)
    _, child = child_of(spec, parent, morphisms)
    assert_same_function(parent, child, 0)
    projection_bn = child.get_submodule("layer1.0.downsample.1").weight
    _one_sgd_step(child)
    assert projection_bn.abs().sum() > 0  # the skip opens


def test_widened_copies_diverge_after_a_step():
    spec = nash_start_spec(num_classes=3, widths=(4, 6, 8))
    _, child = child_of(spec, random_model(spec, 0), [Morphism("widen", 1, 0, new_width=10, seed=3)])
    rows = child.get_submodule("layer1.0.conv1").weight.detach().flatten(1).clone()
    copies = [(i, j) for i in range(len(rows)) for j in range(i + 1, len(rows)) if torch.equal(rows[i], rows[j])]
    assert len(copies) >= 4  # 4 new channels, each a copy of an original
    _one_sgd_step(child)
    after = child.get_submodule("layer1.0.conv1").weight.detach().flatten(1)
    assert all(not torch.equal(after[i], after[j]) for i, j in copies)

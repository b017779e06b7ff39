"""How exactly each NASH morphism preserves the network's function, measured on random small networks.

Per op in MORPHISM_OPS (and for chains of 5 drawn morphisms), --trials times: a random spec (NASH start,
ResBuilder start, a narrow ResNet-18, or a hand-mixed net of conv/basic/bottleneck blocks with kernels 1/3/5,
several activations and pools), random weights AND random BN statistics, a random input batch; parent and
child run in eval mode in float32. The figure is max|child - parent| / max(1, max|parent|) over the logits.

Usage: python benchmarks/morphism_exactness.py [--trials 50] [--seed 0]
The last line printed is one JSON object: op -> the largest relative difference it produced.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from search_spaces import build_model, nash_start_spec, resbuilder_start_spec, resnet_spec  # noqa: E402
from search_spaces.edits.morphism_ops import (  # noqa: E402
    MORPHISM_OPS,
    applicable_sites,
    apply_to_spec,
    draw_morphism,
    draw_morphisms,
)
from search_spaces.edits.morphisms import apply_morphisms  # noqa: E402
from search_spaces.spec import ArchSpec, BlockSpec, HeadSpec, StageSpec, StemSpec  # noqa: E402

IMAGE_SIZE = 8  # at most three 2x reductions below, so every feature map stays at least 1x1
NUM_CLASSES = 5
ACTIVATIONS = ("relu", "relu", "relu", "leaky_relu", "silu", "gelu", "identity")


def random_spec(rng: random.Random) -> ArchSpec:
    family = rng.choice(("nash", "resbuilder", "resnet18", "mixed", "mixed"))
    if family == "nash":
        return nash_start_spec(NUM_CLASSES, widths=tuple(rng.randint(4, 12) for _ in range(3)))
    if family == "resbuilder":
        return resbuilder_start_spec(NUM_CLASSES, width=rng.randint(4, 12))
    if family == "resnet18":
        return resnet_spec(18, NUM_CLASSES, stem="cifar", width_multiplier=0.0625)
    reductions_left = 3
    max_pool = rng.random() < 0.3
    reductions_left -= max_pool
    stem = StemSpec(rng.randint(4, 12), rng.choice((3, 5)), 1, max_pool, rng.choice(ACTIVATIONS))
    channels, stages = stem.out_channels, []
    for _ in range(rng.randint(1, 3)):
        pool = rng.choice(("none", "max", "avg")) if reductions_left else "none"
        reductions_left -= pool != "none"
        blocks = []
        for _ in range(rng.randint(0, 3)):
            kind = rng.choice(("conv", "conv", "basic", "bottleneck"))
            widths = tuple(rng.randint(4, 16) for _ in range({"conv": 1, "basic": 2, "bottleneck": 3}[kind]))
            stride = rng.choice((1, 1, 2)) if reductions_left else 1
            reductions_left -= stride == 2
            needs_projection = stride != 1 or channels != widths[-1]
            projection = kind != "conv" and (needs_projection or rng.random() < 0.5)
            activation = rng.choice(ACTIVATIONS)
            blocks.append(BlockSpec(kind, widths, rng.choice((3, 3, 5, 1)), activation, stride, projection))
            channels = widths[-1]
        stages.append(StageSpec(tuple(blocks), pool))
    return ArchSpec(stem=stem, stages=tuple(stages), head=HeadSpec(num_classes=NUM_CLASSES))


def with_a_run_of_two_conv_blocks(spec: ArchSpec) -> ArchSpec:
    """Random specs rarely hold two matching conv blocks in a row, which add_skip needs; make one."""
    if applicable_sites(spec, "add_skip"):
        return spec
    deepen_sites = applicable_sites(spec, "deepen_conv")
    for site in deepen_sites:
        previous = spec.stages[site.stage - 1].blocks[site.block - 1] if site.block else None
        if previous is not None and previous.kind == "conv" and previous.activation == "relu":
            return apply_to_spec(spec, replace(site, kernel_size=previous.kernel_size))
    return apply_to_spec(apply_to_spec(spec, deepen_sites[0]), deepen_sites[0]) if deepen_sites else spec


def random_model(spec: ArchSpec, seed: int) -> torch.nn.Module:
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


def relative_difference(op: str, rng: random.Random) -> float:
    while True:
        spec = random_spec(rng)
        if op == "add_skip":
            spec = with_a_run_of_two_conv_blocks(spec)
        if op == "sequence_of_5" or applicable_sites(spec, op):
            break
    if op == "sequence_of_5":
        morphisms, _ = draw_morphisms(spec, 5, rng)
    else:
        morphisms = [draw_morphism(spec, rng, ops=(op,))]
    seed = rng.randrange(2**31)
    parent = random_model(spec, seed)
    child_spec, state = apply_morphisms(spec, parent.state_dict(), morphisms)
    child = build_model(child_spec)
    child.load_state_dict(state, strict=True)
    child.eval()
    x = torch.randn(4, spec.in_channels, IMAGE_SIZE, IMAGE_SIZE)
    with torch.no_grad():
        expected, actual = parent(x), child(x)
    return (actual - expected).abs().max().item() / max(1.0, expected.abs().max().item())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    worst, start = {}, time.perf_counter()
    for op in (*MORPHISM_OPS, "sequence_of_5"):
        differences = [relative_difference(op, rng) for _ in range(args.trials)]
        worst[op] = max(differences)
        median = statistics.median(differences)
        print(f"{op:16s} trials {args.trials:4d}  max {worst[op]:.3e}  median {median:.3e}")
    print(f"# {time.perf_counter() - start:.1f} s on 1 thread, torch {torch.__version__}")
    print(json.dumps(worst))


if __name__ == "__main__":
    main()

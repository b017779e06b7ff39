"""How well a latency table predicts whole networks: random architectures of each space, each predicted from the
table (missing parts measured into it first) and timed end to end, and the distribution of the relative errors.

Spaces (each with the image size its method searches at):

    scope_s .. scope_f   ProxylessNAS's scoped ResNet-50: uniform kernel x activation per searched block
    cifar_depth          the stage-wise search's CIFAR ResNet: every stage depth uniform in 1..9
    nash                 NASH's start net after 1..12 random network morphisms (the paper's operators)
    resbuilder           ResBuilder's RB-0Net with 1..12 blocks inserted where its insertion edit puts them

`resnas latency-table TABLE --check N` and benchmarks/latency_check.py run it.
"""

from __future__ import annotations

import os
import random
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .choices import ScopeChoices
from .edits.morphism_ops import draw_morphisms
from .latency import calibrate, locked_table, measure_network, measure_parts
from .latency_table import CHECK_SPACES, DeviceSettings, LatencyTable, Part, network_parts, predict_latency
from .scopes import SCOPES
from .spec import ArchSpec, BlockSpec, cifar_resnet_spec, nash_start_spec, resbuilder_start_spec

SPACES = CHECK_SPACES
assert set(SPACES) >= {f"scope_{scope}" for scope in SCOPES}, "CHECK_SPACES must name every search scope"
Shape = tuple[int, int, int]


@dataclass(frozen=True)
class SpaceSetup:
    image_size: int = 224  # the scoped ResNet-50's; the CIFAR-scale spaces use 32
    cifar_image_size: int = 32
    num_classes: int = 10


def _scope_sample(scope: str, setup: SpaceSetup) -> Callable[[random.Random], ArchSpec]:
    choices = ScopeChoices.resnet50(scope, setup.num_classes)
    return lambda rng: choices.to_spec({label: rng.choice(values) for label, values in choices.choice_labels()})


def _nash_sample(setup: SpaceSetup) -> Callable[[random.Random], ArchSpec]:
    return lambda rng: draw_morphisms(nash_start_spec(setup.num_classes), rng.randint(1, 12), rng)[1]


def _resbuilder_sample(setup: SpaceSetup) -> Callable[[random.Random], ArchSpec]:
    from .edits.resbuilder import INSERTED_ACTIVATION, INSERTED_KERNEL, INSERTED_KIND, stream_width

    def sample(rng: random.Random) -> ArchSpec:
        spec = resbuilder_start_spec(setup.num_classes)
        for _ in range(rng.randint(1, 12)):  # insert_random_block's places, without its weights
            stage = rng.randrange(len(spec.stages)) + 1
            position = rng.randrange(len(spec.stages[stage - 1].blocks) + 1)
            width = stream_width(spec, stage, position)
            blocks = spec.stages[stage - 1].blocks
            block = BlockSpec(INSERTED_KIND, (width, width), INSERTED_KERNEL, INSERTED_ACTIVATION)
            spec = spec.replace_blocks(stage, blocks[:position] + (block,) + blocks[position:])
        return spec

    return sample


def space_sampler(space: str, setup: SpaceSetup) -> tuple[Callable[[random.Random], ArchSpec], Shape]:
    """(draw one architecture, input size) of a space."""
    cifar = (3, setup.cifar_image_size, setup.cifar_image_size)
    if space.startswith("scope_"):
        return _scope_sample(space[len("scope_"):], setup), (3, setup.image_size, setup.image_size)
    if space == "cifar_depth":
        depths = lambda rng: tuple(rng.randint(1, 9) for _ in range(3))  # noqa: E731
        return lambda rng: cifar_resnet_spec(depths(rng), num_classes=setup.num_classes), cifar
    if space == "nash":
        return _nash_sample(setup), cifar
    if space == "resbuilder":
        return _resbuilder_sample(setup), cifar
    raise ValueError(f"unknown space {space!r}; use one of {', '.join(SPACES)}.")


def every_candidate(choices: ScopeChoices) -> list[ArchSpec]:
    """kernels x activations networks that hold every (kernel, activation) pair at every searched position: network
    i has kernel i // A and activation i % A everywhere."""
    count = len(choices.kernels) * len(choices.activations)
    return [choices.to_spec({label: (values[i // len(choices.activations)] if label.endswith("_kernel")
                                     else values[i % len(choices.activations)])
                             for label, values in choices.choice_labels()})
            for i in range(count)]


def space_parts(space: str, setup: SpaceSetup) -> tuple[list[Part], Shape]:
    """Every part a space can hold, where that is a finite set (the scoped ResNet-50, the CIFAR depth space); the
    start net's parts for the spaces that grow (nash, resbuilder: their other parts are measured as they appear)."""
    _, input_size = space_sampler(space, setup)
    if space.startswith("scope_"):
        specs = every_candidate(ScopeChoices.resnet50(space[len("scope_"):], setup.num_classes))
    elif space == "cifar_depth":
        specs = [cifar_resnet_spec((2, 2, 2), num_classes=setup.num_classes)]  # blocks 0 and 1+ of each stage
    elif space == "nash":
        specs = [nash_start_spec(setup.num_classes)]
    else:
        specs = [resbuilder_start_spec(setup.num_classes)]
    parts = [part for spec in specs for part in network_parts(spec, input_size)]
    return list({part.key: part for part in parts}.values()), input_size


def calibration_networks(spaces: list[str], setup: SpaceSetup, count: int, seed: int = 0
                         ) -> list[tuple[ArchSpec, Shape]]:
    """`count` random networks of each space to calibrate a table's part overhead on, drawn apart from the ones
    check_predictions times (another seed string), so the check is not scored on what set the overhead."""
    networks = []
    for space in spaces:
        sample, input_size = space_sampler(space, setup)
        rng = random.Random(f"{seed}:calibrate:{space}")
        networks += [(sample(rng), input_size) for _ in range(count)]
    return networks


def fill_table(table: LatencyTable, spaces: list[str], setup: SpaceSetup, calibrate_per_space: int = 0, seed: int = 0,
               progress: Callable[[str], None] | None = None) -> int:
    """Measure every part `spaces` can hold (space_parts) into `table`; with `calibrate_per_space`, then set its part
    overheads from that many random networks of each space (calibration_networks). Returns the parts measured."""
    measured = sum(measure_parts(table, space_parts(space, setup)[0], progress) for space in spaces)
    if calibrate_per_space:
        calibrate(table, calibration_networks(spaces, setup, calibrate_per_space, seed))
    return measured


def check_predictions(table_path: str | Path, settings: DeviceSettings, spaces: list[str], count: int, seed: int = 0,
                      setup: SpaceSetup = SpaceSetup(), progress: Callable[[str], None] | None = None,
                      paired: bool = False) -> dict:
    """`count` random architectures per space: predicted (missing parts measured into the table first) against
    their whole forward timed here; returns every row and the error distribution by the table's statistic
    (`summary`, `by_space`; both statistics in `summary_median` and `summary_min`), and the distribution of a second
    measurement of each network against its first (`repeatability`: the machine's own noise floor).

    paired: each network's parts are timed again right before it, into a copy of the table (its part overhead
    kept), so the check measures the sum-of-parts model alone: on a machine whose speed drifts with other work,
    a table timed minutes earlier is off by the drift, which no model of the network can remove."""
    rows, load_before = [], os.getloadavg()  # a busy machine times slow: the report says how busy it was
    with locked_table(table_path, settings) as table:
        statistic = table.statistic
    suffix = "_min" if statistic == "min" else ""  # the row fields of the table's statistic
    for space in spaces:
        sample, input_size = space_sampler(space, setup)
        rng = random.Random(f"{seed}:{space}")
        for index in range(count):
            spec = sample(rng)
            with locked_table(table_path, settings) as table:
                measure_parts(table, network_parts(spec, input_size))
            if paired:
                table = LatencyTable(table.device, part_overhead_ms=table.part_overhead_ms, statistic=statistic,
                                     overheads=table.overheads)
                measure_parts(table, network_parts(spec, input_size))
            predicted = predict_latency(spec, table, input_size, statistic="median").total_ms
            predicted_min = predict_latency(spec, table, input_size, statistic="min").total_ms
            measured = measure_network(spec, input_size, table.device)
            # the same network once more: how far two measurements of this machine differ is the floor under any
            # prediction's error (on the shared 2-core VM here: wider than +-10 % for most small networks)
            again = measure_network(spec, input_size, table.device).value(statistic)
            error = (predicted - measured.median_ms) / measured.median_ms
            measured_min = measured.value("min")
            rows.append({"space": space, "index": index, "input_size": list(input_size), "blocks": sum(spec.depths),
                         "predicted_ms": round(predicted, 5), "measured_ms": round(measured.median_ms, 5),
                         "measured_iqr_ms": round(measured.spread_ms, 5), "error": round(error, 5),
                         "predicted_min_ms": round(predicted_min, 5), "measured_min_ms": round(measured_min, 5),
                         "error_min": round((predicted_min - measured_min) / measured_min, 5),
                         "remeasured_ms": round(again, 5),
                         "repeat_error": round((again - measured.value(statistic)) / measured.value(statistic), 5)})
            if progress is not None:
                row = rows[-1]
                progress(f"{space} #{index}: predicted {row[f'predicted{suffix}_ms']:.4g} ms, measured "
                         f"{row[f'measured{suffix}_ms']:.4g} ms ({100 * row[f'error{suffix}']:+.1f}%, {statistic})")
    scored = f"error{suffix}"
    return {"device": settings.describe(), "statistic": statistic, "count_per_space": count, "seed": seed,
            "paired": paired, "load_average_1_5_15_min": {"before": load_before, "after": os.getloadavg()},
            "rows": rows, "summary": summarise(rows, scored),
            "by_space": {space: summarise([r for r in rows if r["space"] == space], scored) for space in spaces},
            "summary_median": summarise(rows), "summary_min": summarise(rows, "error_min"),
            "repeatability": summarise(rows, "repeat_error"),
            "repeatability_by_space": {space: summarise([r for r in rows if r["space"] == space], "repeat_error")
                                       for space in spaces}}


def summarise(rows: list[dict], error: str = "error") -> dict:
    """The distribution of |relative error| (`error`: medians; `error_min`: fastest runs)."""
    errors = [abs(row[error]) for row in rows]
    if not errors:
        return {"architectures": 0}
    signed = [row[error] for row in rows]
    deciles = statistics.quantiles(errors, n=10) if len(errors) > 1 else [errors[0]] * 9
    return {"architectures": len(errors), "within_10_percent": sum(e <= 0.10 for e in errors) / len(errors),
            "within_5_percent": sum(e <= 0.05 for e in errors) / len(errors),
            "median_abs_error": statistics.median(errors), "p90_abs_error": deciles[8], "max_abs_error": max(errors),
            "mean_signed_error": statistics.fmean(signed)}

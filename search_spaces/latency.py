"""Measuring latency tables (search_spaces/latency_table.py holds the torch-free format and prediction).

Timing follows timm's benchmark.py: the module in eval mode under inference_mode, warm-up calls first, every
timed run synchronised with the device (CUDA runs asynchronously: an unsynchronised clock times the launch, not
the work), the median of the timed runs (robust to a stray slow run) and the fastest run kept (what a CPU table
predicts: latency_table.default_statistic), their interquartile range as the spread. A run repeats the forward
until it lasts `min_run_ms`, so microsecond parts are not timed at the clock's resolution.

A part is timed in context, not alone: timed alone, a small part's weights and input stay in L1/L2 across the
timed calls, while inside a whole forward each part's weights and input are cold (the other parts ran in between),
so summed parts came out 10-50 % faster than whole CIFAR-scale networks. Each part is therefore timed as a ring of
K copies (own weights, own input) run one after the other, K chosen so the ring holds CONTEXT_BYTES, and the
ring's time divided by K is the entry. (Measured on the 2-core EPYC here: ResBuilder networks went from 13-57 %
over the prediction to within 2.5 %; ResNet-50 parts at 224 px, far larger than the caches, were unaffected.) The
ring also cools a part's input, which inside a network is hot (just written by the part before): a 2x2 max pool on
a 32 px stem's output costs a third of its ring time there. The calibrated overhead per kind of network absorbs that.

One CPU thread is timed on the thread's CPU clock (time.thread_time), not the wall clock: with one intra-op thread
torch computes in the calling thread, so on an idle machine the two agree (checked: a ResNet-50's fastest runs
agree to 0.1 %), and on a shared one the CPU clock does not count the time other processes hold the core. More
threads, and CUDA, are timed on the wall clock. The table records which (DeviceSettings.clock).

Tests and dry runs swap the clock: `use_timer(fake)` makes every measurement here call `fake(module, example)`.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch
from torch import nn

from .blocks import build_block, conv2d, make_activation
from .builder import build_model, global_pool_layer
from .errors import LatencyTableError
from .latency_table import (PRECISIONS, DeviceSettings, Entry, LatencyTable, Part, missing_table, network_parts,
                            Statistic, network_kind, pick_timing, predict_latency)
from .spec import ArchSpec


@dataclass(frozen=True)
class Timing:
    median_ms: float
    spread_ms: float  # interquartile range of the runs' per-forward times
    runs: int
    min_ms: float | None = None  # the fastest run

    def value(self, statistic: Statistic) -> float:
        return pick_timing(statistic, self.median_ms, self.min_ms)


Timer = Callable[[nn.Module, torch.Tensor], Timing]  # (module ready on its device, example batch) -> timing


def clock_for(device: str, threads: int | None) -> str:
    return "thread_cpu" if device == "cpu" and threads == 1 else "wall"


@dataclass(frozen=True)
class SynchronisedTimer:
    warmup_runs: int = 3
    runs: int = 15
    min_run_ms: float = 20.0

    def __call__(self, module: nn.Module, example: torch.Tensor) -> Timing:
        device = example.device
        synchronise = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        one_thread = clock_for(device.type, torch.get_num_threads()) == "thread_cpu"
        clock = time.thread_time if one_thread else time.perf_counter

        def run(calls: int) -> float:
            synchronise()
            started = clock()
            for _ in range(calls):
                module(example)
            synchronise()
            return (clock() - started) * 1e3 / calls

        calls = 1
        for _ in range(self.warmup_runs):  # warm-up also sizes the runs
            per_call = run(calls)
            calls = max(calls, int(self.min_run_ms / max(per_call, 1e-6)) + 1)
        times = sorted(run(calls) for _ in range(self.runs))
        quartiles = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
        return Timing(statistics.median(times), quartiles[2] - quartiles[0], self.runs, times[0])


_timer: list[Timer] = [SynchronisedTimer()]


@contextlib.contextmanager
def use_timer(timer: Timer) -> Iterator[None]:
    """Every measurement inside the block uses `timer` (tests: fake timings; dry runs: fewer runs)."""
    _timer.insert(0, timer)
    try:
        yield
    finally:
        _timer.remove(timer)


# ---- the device ----------------------------------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def device_settings(device: str = "cpu", batch_size: int = 1, precision: str = "32", channels_last: bool = False,
                    threads: int | None = None) -> DeviceSettings:
    """This machine's settings for `device`; threads default to 1 on the CPU (a deployment's usual single stream)."""
    if device not in ("cpu", "cuda"):
        raise LatencyTableError(f"unknown latency device {device!r}; use cpu or cuda.")
    if precision not in PRECISIONS:
        raise LatencyTableError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}.")
    if batch_size < 1:
        raise LatencyTableError(f"batch size {batch_size} must be at least 1.")
    if device == "cuda":
        if not torch.cuda.is_available():
            raise LatencyTableError("this machine has no CUDA GPU; measure with --device cpu or on the GPU machine.")
        return DeviceSettings("cuda", torch.cuda.get_device_name(torch.cuda.current_device()), batch_size, precision,
                              channels_last, None, torch.__version__, torch.backends.cudnn.version(), "wall")
    if precision != "32":
        raise LatencyTableError(f"precision {precision} needs a CUDA GPU; measure CPU latency at precision 32.")
    threads = threads or 1
    return DeviceSettings("cpu", cpu_model(), batch_size, precision, channels_last, threads, torch.__version__, None,
                          clock_for("cpu", threads))


def _here(table: DeviceSettings) -> DeviceSettings:
    """This machine's settings under the table's choices (batch, precision, memory format, threads)."""
    return device_settings(table.device, table.batch_size, table.precision, table.channels_last, table.threads)


def same_machine(table: DeviceSettings) -> DeviceSettings | None:
    """This machine's settings under the table's choices, when its device is the table's device; else None."""
    if table.device == "cuda" and not torch.cuda.is_available():
        return None
    here = _here(table)
    return here if not here.differences(table) else None


@contextlib.contextmanager
def _measuring(settings: DeviceSettings) -> Iterator[torch.device]:
    threads = torch.get_num_threads()
    if settings.threads:
        torch.set_num_threads(settings.threads)
    try:
        with torch.inference_mode():
            yield torch.device(settings.device)
    finally:
        torch.set_num_threads(threads)


def _ready(module: nn.Module, shape: tuple[int, int, int], settings: DeviceSettings, device: torch.device
           ) -> tuple[nn.Module, torch.Tensor]:
    module = module.to(device).eval()
    example = torch.randn(settings.batch_size, *shape, device=device)
    if settings.channels_last:
        module = module.to(memory_format=torch.channels_last)
        example = example.contiguous(memory_format=torch.channels_last)
    if settings.precision != "32":  # as the searches train (trainers.speed.autocast)
        dtype = torch.bfloat16 if settings.precision == "bf16-mixed" else torch.float16
        inner = module

        class Autocast(nn.Module):
            def forward(self, x: torch.Tensor) -> torch.Tensor:
                with torch.autocast("cuda", dtype=dtype):
                    return inner(x)

        module = Autocast()
    return module, example


def time_module(module: nn.Module, shape: tuple[int, int, int], settings: DeviceSettings) -> Timing:
    """One module's latency on `settings`' device for a batch of `shape` images."""
    with _measuring(settings) as device:
        ready, example = _ready(module, shape, settings, device)
        return _timer[0](ready, example)


CONTEXT_BYTES = 8 * 2**20  # a ring's weights + inputs + outputs: past L2, a fair share of a shared L3
MAX_RING = 16


class _Ring(nn.Module):
    """K copies of one part, each on its own input, one after the other (the example is ignored)."""

    def __init__(self, copies: list[nn.Module], inputs: list[torch.Tensor]):
        super().__init__()
        self.copies = nn.ModuleList(copies)
        self.inputs = inputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for copy, example in zip(self.copies, self.inputs):
            copy(example)
        return x


def time_part(part: Part, settings: DeviceSettings) -> Timing:
    """A part's latency in context: a ring of copies (see the module's docstring). A stand-in timer (use_timer)
    times the part itself."""
    timer = _timer[0]
    if not isinstance(timer, SynchronisedTimer):
        return time_module(part_module(part), part.in_shape, settings)
    first = part_module(part)
    elements = settings.batch_size * (math.prod(part.in_shape) + math.prod(part.out_shape))
    size = 4 * (sum(p.numel() for p in first.parameters()) + elements)
    count = max(1, min(MAX_RING, -(-CONTEXT_BYTES // max(size, 1))))
    with _measuring(settings) as device:
        ready = [_ready(module, part.in_shape, settings, device)
                 for module in [first, *(part_module(part) for _ in range(count - 1))]]
        ring = _Ring([module for module, _ in ready], [example for _, example in ready])
        timing = timer(ring, ready[0][1])
    fastest = timing.min_ms / count if timing.min_ms is not None else None
    return Timing(timing.median_ms / count, timing.spread_ms / count, timing.runs, fastest)


# ---- parts ------------------------------------------------------------------------------------------------------
class _Stem(nn.Sequential):
    def __init__(self, part: Part):
        stem = part.spec
        super().__init__(conv2d(part.in_shape[0], stem.out_channels, stem.kernel_size, stem.stride),
                         nn.BatchNorm2d(stem.out_channels), make_activation(stem.activation),
                         nn.MaxPool2d(3, stride=2, padding=1) if stem.max_pool else nn.Identity())


def part_module(part: Part) -> nn.Module:
    """The module the builder makes for `part` (same layers, so the same kernels run)."""
    if part.kind == "stem":
        return _Stem(part)
    if part.kind == "pool":
        return (nn.MaxPool2d if part.spec == "max" else nn.AvgPool2d)(kernel_size=2, stride=2)
    if part.kind == "head":
        return nn.Sequential(global_pool_layer("avg"), nn.Linear(part.in_shape[0], part.spec.num_classes))
    return build_block(part.spec, part.in_shape[0])


def measure_parts(table: LatencyTable, parts: Sequence[Part], progress: Callable[[str], None] | None = None) -> int:
    """Measure the parts the table lacks into it (on this machine, which must be the table's device); returns how
    many were measured."""
    missing = table.missing(parts)
    if missing:
        require_device(table)
    for part in missing:
        timing = time_part(part, table.device)
        table.entries[part.key] = Entry(timing.median_ms, timing.spread_ms, timing.runs, part.family, part.macs,
                                        timing.min_ms)
        if progress is not None:
            progress(f"{part.key}: {timing.median_ms:.4g} ms (IQR {timing.spread_ms:.2g})")
    return len(missing)


def require_device(table: LatencyTable, path: str | Path = "the latency table") -> None:
    if table.device.device == "cuda" and not torch.cuda.is_available():
        raise LatencyTableError(f"{path} was measured on {table.device.describe()} and this machine has no GPU; "
                                f"fill it on that device, or make a table for this one with `resnas latency-table`.")
    here = _here(table.device)
    different = here.differences(table.device)
    if different:
        raise LatencyTableError(f"{path} was measured on {table.device.describe()}, not on this machine's "
                                f"{here.describe()} ({', '.join(different)} differ); fill it on its own device, or "
                                f"make a table for this one with `resnas latency-table NEW.json`.")


def measure_network(spec: ArchSpec, input_size: tuple[int, int, int], settings: DeviceSettings) -> Timing:
    """End-to-end latency of the whole network built from `spec`."""
    return time_module(build_model(spec, zero_init_last=False), input_size, settings)


def calibrate(table: LatencyTable, specs: Sequence[tuple[ArchSpec, tuple[int, int, int]]]) -> dict:
    """Set the table's part overheads from whole forwards of `specs` (network, input size), measured here: one for
    each kind of network among them (latency_table.network_kind: input size and block kinds), one for each input
    size (`overheads`), and one over all (`part_overhead_ms`, for networks of neither).

    The parts are timed in rings; a whole network adds its own module calls (the top level, each stage's container)
    per part. The overhead o is the one that makes the prediction sum + o * parts best in relative terms: of the
    networks' own break-even values (whole - sum) / parts, the one with the smallest median |relative error| over
    them. A plain median of those values would be ruled by the largest networks, whose timing noise of a few ms per
    forward dwarfs the microseconds per part that decide the small ones. Every number behind it is kept in the
    table's `calibration`.
    """
    records = []
    for spec, size in specs:
        parts = network_parts(spec, size)
        measure_parts(table, parts)
        summed = sum(table.entries[part.key].value(table.statistic) for part in parts)
        whole = measure_network(spec, size, table.device).value(table.statistic)
        records.append({"kind": network_kind(parts), "parts": len(parts), "sum_of_parts_ms": round(summed, 5),
                        "whole_ms": round(whole, 5)})

    def best_overhead(group: list[dict]) -> tuple[float, float]:
        """(overhead, the median relative error it leaves) over `group`."""
        def median_error(overhead: float) -> float:
            return statistics.median(abs(r["sum_of_parts_ms"] + overhead * r["parts"] - r["whole_ms"]) / r["whole_ms"]
                                     for r in group)

        overhead = min(((r["whole_ms"] - r["sum_of_parts_ms"]) / r["parts"] for r in group), key=median_error)
        return overhead, median_error(overhead)

    groups: dict[str, list[dict]] = {}
    for record in records:  # by kind and by input size (the kind's first word)
        for key in dict.fromkeys((record["kind"], record["kind"].split(" ")[0])):
            groups.setdefault(key, []).append(record)
    fitted = {key: best_overhead(group) for key, group in groups.items()}
    overall = best_overhead(records) if records else (0.0, None)
    table.part_overhead_ms = overall[0]
    table.overheads = {key: overhead for key, (overhead, _) in fitted.items()}
    table.calibration = {"method": "per-part overhead for each kind of network, each input size and over all: of each "
                                   "network's (whole - sum of parts) / parts, the one with the smallest median "
                                   "relative error over them",
                         "statistic": table.statistic,
                         "median_relative_error": {key: round(error, 5) for key, (_, error) in fitted.items()},
                         "median_relative_error_one_overhead": round(overall[1], 5) if records else None,
                         "networks": records}
    return table.calibration


# ---- a table on disk, filled lazily --------------------------------------------------------------------------------
@contextlib.contextmanager
def locked_table(path: str | Path, settings: DeviceSettings | None = None) -> Iterator[LatencyTable]:
    """The table at `path` (a new one for `settings` when absent), held under an exclusive lock and saved on exit:
    trials that fill one table measure one at a time (two at once would slow each other's timings) and never
    lose each other's entries."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if path.exists():
                table = LatencyTable.load(path)
                different = settings.differences(table.device) if settings is not None else []
                if different:
                    raise LatencyTableError(
                        f"{path} holds timings for {table.device.describe()}, which differs in {', '.join(different)}; "
                        f"give another file for these settings, or measure with the table's own.")
            elif settings is None:
                raise LatencyTableError(missing_table(path))
            else:
                table = LatencyTable(settings)
            before = table.to_dict()
            yield table
            if table.to_dict() != before or not path.exists():
                table.save(path)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def table_with_parts(path: str | Path, parts: Sequence[Part]) -> LatencyTable:
    """The table at `path`, with the `parts` it lacks measured into it first when this machine is its device;
    elsewhere as it is (the caller estimates or refuses what is still missing)."""
    table = LatencyTable.load(path)
    if table.missing(parts) and same_machine(table.device) is not None:
        with locked_table(path) as table:
            measure_parts(table, parts)
    return table


def predicted_latency(spec: ArchSpec, path: str | Path, input_size: tuple[int, int, int]) -> dict:
    """What a trial reports for `spec`: `latency_ms` predicted from the table at `path` (table_with_parts: parts it
    lacks measured on its device, elsewhere estimated from similar entries and their count reported too)."""
    table = table_with_parts(path, network_parts(spec, input_size))
    return predict_latency(spec, table, input_size, estimate_missing=True).facts()


def measured_latency(spec: ArchSpec, path: str | Path, input_size: tuple[int, int, int]) -> float | None:
    """The whole network's latency measured here with the table's settings when this machine is its device, else
    None (a measurement on another device would not be the number the table predicts)."""
    table = LatencyTable.load(path)
    settings = same_machine(table.device)
    return None if settings is None else measure_network(spec, input_size, settings).value(table.statistic)

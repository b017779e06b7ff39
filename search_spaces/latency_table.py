"""Measured latency tables, and the latency an ArchSpec is predicted to take, without torch.

A network is cut into *parts*: the stem, each stage's pooling layer, each block, the head. A table holds one
measured latency per part, keyed by the part's spec and input shape (`block bottleneck k5/s2 256->128-128-512 mish
proj @256x56x56`), for one device setting named in its header (the machine, batch size, precision, memory format,
CPU threads, torch and cuDNN versions). The prediction for a network is the sum over its parts of their timings
(the table's `statistic`: fastest runs on a CPU, medians on a GPU; default_statistic says why) plus a part
overhead per part (what a part costs inside a whole forward beyond its own timing: the stage containers' and the
top level's module calls, and for large parts the difference between timing one alone and in its network;
calibrated on whole networks per kind of network, search_spaces/latency.py).

Only measuring needs torch (search_spaces/latency.py); reading, predicting and writing a table need none, so NNI's
tuner process (which must connect within 10 s) can hold back children over a latency budget. A part the table
lacks can be *estimated* (`estimate_missing=True`) from the measured parts of its family (same block kind, kernel
and activation) by a least-squares line over their MACs: good enough to rank a child against a budget, flagged in
the prediction, and replaced by a measurement as soon as a trial on the table's device fills the entry.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from statistics import median
from typing import Any, Iterable, Literal, Sequence

from .errors import LatencyTableError
from .scopes import conv_output_size
from .spec import ArchSpec, BlockSpec, HeadSpec, StemSpec

TABLE_FORMAT = "resnas-latency-table"
TABLE_VERSION = 1
DEVICES: tuple[str, ...] = ("cpu", "cuda")
# trainers.speed's resolved precisions (no "auto": a table is for one precision); mixed ones need CUDA.
PRECISIONS: tuple[str, ...] = ("32", "bf16-mixed", "16-mixed")
PartKind = Literal["stem", "pool", "block", "head"]
# The spaces `resnas latency-table --space/--check` knows (search_spaces/latency_check.py samples them).
CHECK_SPACES: tuple[str, ...] = ("scope_s", "scope_m", "scope_l", "scope_f", "cifar_depth", "nash", "resbuilder")
Shape = tuple[int, int, int]  # (C, H, W) of one image; the batch size is the table's
# What a prediction sums: the entries' medians (the latency), or their fastest runs (the latency on a machine of one's
# own, where others' work on a shared one made the medians drift: `resnas latency-table --check` reports both).
Statistic = Literal["median", "min"]
STATISTICS: tuple[str, ...] = ("median", "min")


def default_statistic(device: str) -> Statistic:
    """A new table's statistic. The CPU: the fastest run, since CPUs are usually shared (cloud VMs, a desktop) and
    there the median drifts with other processes: on the 2-core VM here the same network timed twice agreed within
    +-10 % for 30-70 % of small networks by their medians, with a median |difference| of 4-11 %, and 1.4-5 % by their
    fastest runs; predictions from fastest runs were within +-10 % for 76 % of networks against 60 % from medians. A
    GPU: the median (timm's benchmark.py), as the GPU is held by one process."""
    return "min" if device == "cpu" else "median"


def pick_timing(statistic: Statistic, median_ms: float, min_ms: float | None) -> float:
    """The timing a table of `statistic` compares: the fastest run where one was kept, else the median."""
    return min_ms if statistic == "min" and min_ms is not None else median_ms


@dataclass(frozen=True)
class DeviceSettings:
    """What a latency depends on besides the network: a table's entries hold only for these."""

    device: str  # cpu or cuda
    device_name: str  # the GPU's name, or the CPU's model from /proc/cpuinfo
    batch_size: int = 1
    precision: str = "32"
    channels_last: bool = False
    threads: int | None = None  # torch's CPU threads while timing (None on cuda)
    torch: str = ""
    cudnn: int | None = None
    clock: str = "wall"  # "thread_cpu" for one CPU thread (search_spaces.latency.clock_for says why)

    def describe(self) -> str:
        """One line, e.g. `cpu Intel(R) Xeon(R) ..., 1 thread, batch 1, precision 32, NCHW, torch 2.4.1`."""
        threads = f", {self.threads} thread{'s' if self.threads != 1 else ''}" if self.threads else ""
        cudnn = f", cuDNN {self.cudnn}" if self.cudnn else ""
        layout = "channels_last" if self.channels_last else "NCHW"
        clock = ", thread CPU clock" if self.clock == "thread_cpu" else ""
        return (f"{self.device} {self.device_name}{threads}, batch {self.batch_size}, precision {self.precision}, "
                f"{layout}, torch {self.torch}{cudnn}{clock}")

    def differences(self, other: "DeviceSettings") -> list[str]:
        """The names of the settings in which `other` differs."""
        return [f.name for f in fields(self) if getattr(self, f.name) != getattr(other, f.name)]


@dataclass(frozen=True)
class Entry:
    """One part's timing: the median over timed runs of the per-forward time, and the runs' interquartile range.
    `min_ms`, the fastest run, is kept for machines shared with other work (see Statistic)."""

    median_ms: float
    spread_ms: float
    runs: int
    family: str  # parts whose latency grows alike with their MACs (estimates of missing parts use it)
    macs: int
    min_ms: float | None = None

    def value(self, statistic: Statistic) -> float:
        return pick_timing(statistic, self.median_ms, self.min_ms)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Entry":
        fastest = data.get("min_ms")
        return cls(float(data["median_ms"]), float(data["spread_ms"]), int(data["runs"]), str(data["family"]),
                   int(data["macs"]), float(fastest) if fastest is not None else None)


# ---- parts ------------------------------------------------------------------------------------------------------
def network_kind(parts: Sequence[Part]) -> str:
    """`3x32x32 basic`: a network's input shape (its first part's input) and its block kinds, what a table's part
    overheads are calibrated per."""
    kinds = sorted({part.spec.kind for part in parts if part.kind == "block"})
    return " ".join(["x".join(str(side) for side in parts[0].in_shape), *kinds])


@dataclass(frozen=True)
class Part:
    """One measurable piece of a network at one input shape (one image; the table's batch size applies)."""

    kind: PartKind
    spec: StemSpec | BlockSpec | HeadSpec | str  # a stage pool is its name, "max" or "avg"
    in_shape: Shape
    out_shape: Shape
    macs: int  # multiply-adds of its convolutions and fc (pooling counts its window reads)

    @property
    def key(self) -> str:
        channels, height, width = self.in_shape
        at = f"@{channels}x{height}x{width}"
        if self.kind == "stem":
            s = self.spec
            pool = " maxpool" if s.max_pool else ""
            return f"stem k{s.kernel_size}/s{s.stride} {channels}->{s.out_channels} {s.activation}{pool} {at}"
        if self.kind == "pool":
            return f"pool {self.spec} 2x2/2 {at}"
        if self.kind == "head":
            return f"head avg+fc {channels}->{self.spec.num_classes} {at}"
        b = self.spec
        widths = "-".join(map(str, b.widths))
        projection = " proj" if b.projection else ""
        return f"{b.kind} k{b.kernel_size}/s{b.stride} {channels}->{widths} {b.activation}{projection} {at}"

    @property
    def family(self) -> str:
        if self.kind == "block":
            return f"{self.spec.kind} k{self.spec.kernel_size} {self.spec.activation}"
        if self.kind == "stem":
            return f"stem k{self.spec.kernel_size} {self.spec.activation}"
        return f"pool {self.spec}" if self.kind == "pool" else "head"


def _conv(shape: Shape, out_channels: int, kernel: int, stride: int) -> tuple[Shape, int]:
    """Output shape and MACs of a padded (k // 2) convolution."""
    channels, height, width = shape
    out_h = conv_output_size(height, kernel, stride, kernel // 2)
    out_w = conv_output_size(width, kernel, stride, kernel // 2)
    return (out_channels, out_h, out_w), kernel * kernel * channels * out_channels * out_h * out_w


def block_part(block: BlockSpec, shape: Shape) -> Part:
    """The part of one block reading images of `shape` (C, H, W)."""
    macs, current = 0, shape
    if block.kind == "bottleneck":  # 1x1, then the k x k carrying the stride, then 1x1
        plan = [(block.widths[0], 1, 1), (block.widths[1], block.kernel_size, block.stride), (block.widths[2], 1, 1)]
    else:  # conv, basic, resbuilder: the first k x k carries the stride
        plan = [(width, block.kernel_size, block.stride if index == 0 else 1)
                for index, width in enumerate(block.widths)]
    for out_channels, kernel, stride in plan:
        current, conv_macs = _conv(current, out_channels, kernel, stride)
        macs += conv_macs
    if block.projection:
        macs += _conv(shape, block.out_channels, 1, block.stride)[1]
    return Part("block", block, shape, current, macs)


def network_parts(spec: ArchSpec, input_size: Shape) -> list[Part]:
    """The parts of `spec` in forward order for one image of `input_size` (C, H, W)."""
    if tuple(input_size)[0] != spec.in_channels:
        raise LatencyTableError(f"input_size has {input_size[0]} channels but the network takes {spec.in_channels}; "
                                f"pass input_size=({spec.in_channels}, H, W).")
    shape: Shape = tuple(input_size)  # type: ignore[assignment]
    stem = spec.stem
    out, macs = _conv(shape, stem.out_channels, stem.kernel_size, stem.stride)
    if stem.max_pool:  # the builder's MaxPool2d(3, stride=2, padding=1)
        out = (out[0], conv_output_size(out[1], 3, 2, 1), conv_output_size(out[2], 3, 2, 1))
    parts = [Part("stem", stem, shape, out, macs)]
    shape = out
    for stage in spec.stages:
        if stage.pool != "none":
            pooled = (shape[0], conv_output_size(shape[1], 2, 2, 0), conv_output_size(shape[2], 2, 2, 0))
            parts.append(Part("pool", stage.pool, shape, pooled, 4 * pooled[0] * pooled[1] * pooled[2]))
            shape = pooled
        for block in stage.blocks:
            parts.append(block_part(block, shape))
            shape = parts[-1].out_shape
    parts.append(Part("head", spec.head, shape, (spec.head.num_classes, 1, 1), shape[0] * spec.head.num_classes))
    return parts


# ---- the table ---------------------------------------------------------------------------------------------------
@dataclass
class LatencyTable:
    device: DeviceSettings
    entries: dict[str, Entry] = field(default_factory=dict)
    # Added to every part of a network of a kind and input size not calibrated: (whole forward - sum of its parts) /
    # parts, fitted over every network timed when the table was calibrated; 0 when uncalibrated. Per part, not per
    # network: the containers' calls grow with the parts.
    part_overhead_ms: float = 0.0
    calibration: dict[str, Any] = field(default_factory=dict)  # how the overheads were measured
    # What predictions sum and the calibration and measurements compare: None picks default_statistic(device).
    statistic: Statistic | None = None
    # Overheads calibrated per kind of network (network_kind: `3x32x32 basic`) and per input size (`3x32x32`), used
    # for networks of that kind, else of that size: one number does not serve all. Fastest runs on the 2-core VM
    # here: a 224 px ResNet-50's parts timed alone were 6-20 % slower than inside the network (-0.5..-1.5 ms a
    # part), a 32 px CIFAR ResNet's a few microseconds faster; one overhead for both (-0.69 ms) sent small
    # networks' predictions negative, and one for every 32 px network put ResBuilder's 0.5 ms networks 25-50 % over.
    overheads: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.statistic is None:
            self.statistic = default_statistic(self.device.device)
        if self.statistic not in STATISTICS:
            raise LatencyTableError(f"unknown latency statistic {self.statistic!r}; use one of {', '.join(STATISTICS)}.")

    def to_dict(self) -> dict[str, Any]:
        return {"format": TABLE_FORMAT, "version": TABLE_VERSION, "device": asdict(self.device),
                "statistic": self.statistic, "part_overhead_ms": self.part_overhead_ms,
                "overheads": self.overheads, "calibration": self.calibration,
                "entries": {key: asdict(entry) for key, entry in sorted(self.entries.items())}}

    @classmethod
    def from_dict(cls, data: Any, where: str = "latency table") -> "LatencyTable":
        if not isinstance(data, dict) or data.get("format") != TABLE_FORMAT:
            raise LatencyTableError(f"{where} is not a resnas latency table; make one with `resnas latency-table`.")
        if data.get("version") != TABLE_VERSION:
            raise LatencyTableError(f"{where} has table version {data.get('version')!r} and this resnas reads version "
                                    f"{TABLE_VERSION}; measure it again with `resnas latency-table`.")
        try:
            device = DeviceSettings(**data["device"])
            entries = {key: Entry.from_dict(entry) for key, entry in data.get("entries", {}).items()}
            overheads = {str(key): float(value) for key, value in data.get("overheads", {}).items()}
            return cls(device, entries, float(data.get("part_overhead_ms", 0.0)), dict(data.get("calibration", {})),
                       # a table written before `statistic` existed was calibrated on medians
                       statistic=data.get("statistic", "median"), overheads=overheads)
        except (KeyError, TypeError, ValueError, LatencyTableError) as error:
            raise LatencyTableError(f"{where} is damaged ({error}); measure it again with "
                                    f"`resnas latency-table`.") from None

    @classmethod
    def load(cls, path: str | Path) -> "LatencyTable":
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise LatencyTableError(missing_table(path)) from None
        except (OSError, json.JSONDecodeError) as error:
            raise LatencyTableError(f"latency table {path} cannot be read ({error}); measure it again with "
                                    f"`resnas latency-table`.") from None
        return cls.from_dict(data, f"latency table {path}")

    def save(self, path: str | Path) -> None:
        """Atomically: a reader (a tuner, another trial) sees the old table or the new one, never half of one."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(descriptor, "w") as handle:
                handle.write(json.dumps(self.to_dict(), indent=1) + "\n")
            os.replace(tmp_name, path)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise

    def use_statistic(self, statistic: Statistic) -> None:
        """Predict from `statistic` from now on; the overheads were calibrated on the old one and are dropped."""
        if statistic != self.statistic:
            self.statistic, self.part_overhead_ms, self.overheads, self.calibration = statistic, 0.0, {}, {}

    def overhead_for(self, parts: Sequence[Part]) -> float:
        """The part overhead for the network made of `parts`: calibrated on its kind, else on its input size, else
        over every network calibrated."""
        kind = network_kind(parts)
        return self.overheads.get(kind, self.overheads.get(kind.split(" ")[0], self.part_overhead_ms))

    def missing(self, parts: Iterable[Part]) -> list[Part]:
        """The parts without an entry, each key once, in order."""
        seen, result = set(), []
        for part in parts:
            if part.key not in self.entries and part.key not in seen:
                seen.add(part.key)
                result.append(part)
        return result

    # ---- prediction ----
    def part_ms(self, part: Part, estimate_missing: bool = False, statistic: Statistic | None = None,
                overhead: float | None = None) -> tuple[float, bool]:
        """(latency inside a network: its entry + the part overhead, estimated) of one part; a missing one raises
        unless `estimate_missing`. `statistic` defaults to the table's, `overhead` to part_overhead_ms (pass
        overhead_for(the network's parts))."""
        statistic = statistic or self.statistic
        overhead = self.part_overhead_ms if overhead is None else overhead
        entry = self.entries.get(part.key)
        if entry is not None:
            return entry.value(statistic) + overhead, False
        if not estimate_missing:
            raise LatencyTableError(f"the latency table has no entry for `{part.key}`; fill it on its device with "
                                    f"`resnas latency-table TABLE --arch ARCH.json`.")
        return self._estimate(part, statistic) + overhead, True

    def _estimate(self, part: Part, statistic: Statistic = "median") -> float:
        """A least-squares line ms = a + b * MACs through the measured parts of the same family (kind, kernel,
        activation), else of the same kind, else (a block) of any block kind; one point gives a proportion, none
        an error."""
        kind = part.family.split(" ")[0]
        block_kinds = {"conv", "basic", "bottleneck", "resbuilder"}
        tiers = [lambda family: family == part.family, lambda family: family.split(" ")[0] == kind]
        if kind in block_kinds:
            tiers.append(lambda family: family.split(" ")[0] in block_kinds)
        for matches in tiers:
            points = [(e.macs, e.value(statistic)) for e in self.entries.values() if matches(e.family)]
            if points:
                return _line_through(points, part.macs)
        raise LatencyTableError(f"the latency table has no measured {kind} part to estimate `{part.key}` from; "
                                f"measure one with `resnas latency-table TABLE --arch ARCH.json` on its device.")


def missing_table(path: str | Path) -> str:
    """The one sentence for a table that is not there."""
    return (f"latency table {path} does not exist; measure one on the target device with `resnas latency-table "
            f"{path} --config YOUR_CONFIG.yml` (or --space / --arch).")


def _line_through(points: list[tuple[int, float]], macs: int) -> float:
    xs = [float(x) for x, _ in points]
    if len(set(xs)) < 2:  # one size measured: scale it
        ratio = median(ms / x for x, ms in points if x > 0) if any(x > 0 for x in xs) else 0.0
        return ratio * macs if ratio else median(ms for _, ms in points)
    mean_x, mean_y = sum(xs) / len(xs), sum(ms for _, ms in points) / len(points)
    slope = sum((x - mean_x) * (ms - mean_y) for x, (_, ms) in zip(xs, points)) / sum((x - mean_x) ** 2 for x in xs)
    slope = max(slope, 0.0)  # more work never takes less time
    intercept = max(mean_y - slope * mean_x, 0.0)
    return intercept + slope * macs


@dataclass(frozen=True)
class Prediction:
    total_ms: float
    parts_ms: tuple[tuple[str, float], ...]  # (key, ms) in forward order, each with the part overhead
    estimated: tuple[str, ...] = ()  # keys estimated, not measured

    def facts(self) -> dict[str, Any]:
        """What a trial reports: `latency_ms`, and which parts were estimated when some were."""
        facts: dict[str, Any] = {"latency_ms": round(self.total_ms, 4)}
        if self.estimated:
            facts["latency_estimated_parts"] = len(self.estimated)
        return facts


def predict_latency(spec: ArchSpec, table: LatencyTable, input_size: Shape, estimate_missing: bool = False,
                    statistic: Statistic | None = None) -> Prediction:
    """The sum of the parts' entries (the table's statistic unless `statistic`), each plus the table's part
    overhead for its kind of network; LatencyTableError names a missing part unless `estimate_missing`."""
    parts_ms, estimated = [], []
    parts = network_parts(spec, input_size)
    overhead = table.overhead_for(parts)
    for part in parts:
        ms, was_estimated = table.part_ms(part, estimate_missing, statistic, overhead)
        parts_ms.append((part.key, ms))
        if was_estimated:
            estimated.append(part.key)
    total = sum(ms for _, ms in parts_ms)
    return Prediction(total, tuple(parts_ms), tuple(dict.fromkeys(estimated)))


__all__ = ["CHECK_SPACES", "DEVICES", "PRECISIONS", "STATISTICS", "TABLE_FORMAT", "TABLE_VERSION", "DeviceSettings",
           "Entry", "LatencyTable", "Part", "Prediction", "block_part", "default_statistic", "missing_table",
           "network_kind", "network_parts", "pick_timing", "predict_latency"]

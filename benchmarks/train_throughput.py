"""Training throughput, side by side in one run: what the toolkit's loops cost over a bare PyTorch loop.

Contenders, on the same network, the same data module and the same resolved precision / memory format:
- bare: a hand-written loop (forward, cross-entropy, backward, SGD step; then the validation batches);
- fit: trainers.fit (Lightning) over the DataLoader path;
- fit_device: trainers.fit over the device-resident path (trainers/device_data.py);
- bare_device: the bare loop over the device-resident path;
- supernet: ProxylessSearch.weight_step on a ScopedResNet50 with its path pinned, against
  supernet_bare: the bare loop on the plain network of that path (build_model(space.to_spec(path))).
Each contender runs `--batches` training batches and `--val-batches` validation batches per round; rounds
alternate the contenders so that load elsewhere on a shared machine hits all alike, and each contender's
median round gives its images per second (training images / seconds: wall seconds, or on the CPU without
workers the process's CPU seconds, which a shared machine's other load does not inflate). Ratios are time ratios, the
median over rounds of the ratio within a round: 1.05 means 5% slower than the bare loop. A data-only line
compares the two data paths without a network.

CPU (default without a GPU): a narrow CIFAR ResNet-20 on synthetic CIFAR-shaped data, one thread, about
1-2 minutes; the fit/bare ratio is expected to stay <= 1.10. CUDA: a CIFAR-stem ResNet-50 and a CIFAR
ResNet-56 (3 stages of 9 basic blocks, 16/32/64 channels) in bf16 on CIFAR-10 when its files are under
--data-dir, else synthetic data of CIFAR-10's shape, and absolute images per second.

Usage: python benchmarks/train_throughput.py [--device cpu|cuda] [--rounds 6] [--batches N]
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from search_spaces import build_model, resnet_spec  # noqa: E402
from search_spaces.spec import cifar_resnet_spec  # noqa: E402
from trainers import OptimConfig, fit, make_datamodule  # noqa: E402
from trainers.datasets import DATASETS, DataError, DatasetEntry, DatasetInfo, register_dataset  # noqa: E402
from trainers.speed import autocast, resolve_channels_last, resolve_precision  # noqa: E402

SYNTHETIC = "synthetic_cifar"


def register_synthetic(images: int) -> None:
    """CIFAR-10's shape and statistics, random pixels: the benchmark needs no download."""
    def read(info, data_dir, train, download):
        generator = torch.Generator().manual_seed(0 if train else 1)
        count = images if train else max(256, images // 5)
        pixels = torch.randint(0, 256, (count, 3, 32, 32), generator=generator, dtype=torch.uint8)
        return pixels, torch.randint(0, 10, (count,), generator=generator)

    if SYNTHETIC not in DATASETS:
        info = DatasetInfo(SYNTHETIC, 10, 3, 32, (0.5,) * 3, (0.29,) * 3, True, "crop", "")
        register_dataset(DatasetEntry(info, read))


def networks(device: torch.device, width: float) -> dict[str, Callable[[], torch.nn.Module]]:
    if device.type == "cuda":
        return {
            "resnet50_cifar": lambda: build_model(resnet_spec(50, num_classes=10, stem="cifar")),
            "resnet56": lambda: build_model(cifar_resnet_spec((9, 9, 9))),
        }
    return {"resnet20": lambda: build_model(resnet_spec(18, num_classes=10, stem="cifar", width_multiplier=width,
                                                        stage_depths=(3, 3, 3)))}


# ---- the bare loop ----------------------------------------------------------------------------------------
class Bare:
    """What a user would write by hand for one short training run: no callbacks, no logging, an SGD
    optimiser made for the run (as fit's configure_optimizers makes one), one step per batch."""

    def __init__(self, model: torch.nn.Module, device: torch.device, precision: str, channels_last: bool,
                 optimizer_per_run: bool = True):
        self.device, self.precision, self.channels_last = device, precision, channels_last
        self.model = model.to(device)
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        # False: one optimiser for all runs, as the supernet's weight optimiser (steady-state steps only)
        self.optimizer = None if optimizer_per_run else self._optimizer()

    def _optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.model.parameters(), lr=0.05, momentum=0.9, nesterov=True)

    def batch(self, images, labels):
        images = images.to(self.device, non_blocking=True)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images, labels.to(self.device, non_blocking=True)

    def run(self, datamodule, batches: int, val_batches: int) -> None:
        optimizer = self.optimizer or self._optimizer()
        self.model.train()
        for images, labels in itertools.islice(datamodule.train_dataloader(), batches):
            images, labels = self.batch(images, labels)
            with autocast(self.precision, self.device):
                loss = F.cross_entropy(self.model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        self.model.eval()
        with torch.no_grad():
            for images, labels in itertools.islice(datamodule.val_dataloader(), val_batches):
                images, labels = self.batch(images, labels)
                with autocast(self.precision, self.device):
                    self.model(images).argmax(1).eq(labels).float().mean()
        synchronize(self.device)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_fit(model, datamodule, device, precision, channels_last, batches, val_batches) -> None:
    fit(model, datamodule, OptimConfig(schedule="none"), epochs=1, accelerator="gpu" if device.type == "cuda" else "cpu",
        limit_train_batches=batches, limit_val_batches=val_batches, precision=precision, channels_last=channels_last)
    model.to(device)  # fit hands the model back on the CPU; keep contenders' copies equally placed


# ---- the supernet's weight step ---------------------------------------------------------------------------
class Supernet:
    def __init__(self, width: float, device: torch.device, precision: str, channels_last: bool):
        # Imported here: NNI's space and the proxyless package need NNI, and gpu_check.py reuses this module's
        # other functions on a machine without it.
        from search_spaces import ScopedResNet50
        from strategies.proxyless import ProxylessSearchConfig
        from strategies.proxyless.search import ProxylessSearch

        torch.manual_seed(0)
        space = ScopedResNet50("m", num_classes=10, stem="cifar", width_multiplier=width)
        self.path: dict = {}
        space.random(memo=self.path)
        self.plain = build_model(space.to_spec(self.path))
        config = ProxylessSearchConfig(input_size=(3, 32, 32), precision=precision, channels_last=channels_last)
        self.search = ProxylessSearch(space, config, device)
        values = self.search.bank.candidate_values
        self.pinned = {label: values[label].index(value) for label, value in self.path.items()}
        self.device = device

    def run(self, datamodule, batches: int) -> None:
        self.search.model.train()
        for images, labels in itertools.islice(datamodule.train_dataloader(), batches):
            self.search.weight_step(images, labels, self.pinned)
        synchronize(self.device)


# Wall time, except on the CPU without DataLoader workers: there the process's own CPU time, which the other
# processes of a shared machine do not inflate (one thread, so CPU seconds are the seconds the step needs).
CLOCK: Callable[[], float] = time.perf_counter


def timed(step: Callable[[], None]) -> float:
    started = CLOCK()
    step()
    return CLOCK() - started


def data_only(datamodule, batches: int, device: torch.device) -> float:
    """Seconds to make `batches` training batches and have them on the device."""
    def run() -> None:
        for images, labels in itertools.islice(datamodule.train_dataloader(), batches):
            images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        synchronize(device)
    run()
    return statistics.median(timed(run) for _ in range(3))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--batches", type=int, default=None, help="training batches per round")
    parser.add_argument("--val-batches", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--width", type=float, default=0.25, help="CPU only: ResNet-20 width (0.25 = 16/32/64)")
    parser.add_argument("--supernet-width", type=float, default=None)
    parser.add_argument("--num-workers", type=int, default=None,
                        help="DataLoader workers (default: trainers.speed.default_workers)")
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads (default on the CPU: 1, as a shared machine's spare core makes "
                             "multi-threaded timings swing tenfold; on CUDA torch's default)")
    args = parser.parse_args()
    device = torch.device(args.device)
    on_cuda = device.type == "cuda"
    if args.threads or not on_cuda:
        torch.set_num_threads(args.threads or 1)
    if on_cuda:
        torch.backends.cudnn.benchmark = True  # as fit's Trainer sets it: the bare loop gets the same kernels
    batches = args.batches or (100 if on_cuda else 10)
    batch_size = args.batch_size or (256 if on_cuda else 32)
    supernet_width = args.supernet_width or (1.0 if on_cuda else 0.125)
    precision = resolve_precision("auto", device)
    channels_last = resolve_channels_last("auto", device, precision)
    register_synthetic(images=50_000 if on_cuda else 4_096)
    dataset = SYNTHETIC
    if on_cuda:
        try:
            make_datamodule("cifar10", data_dir=args.data_dir, download=False).setup()
            dataset = "cifar10"
        except DataError:
            pass

    def datamodule(on_device: bool):
        module = make_datamodule(dataset, data_dir=args.data_dir, batch_size=batch_size, download=False,
                                 num_workers=args.num_workers, data_on_device=on_device, device=device)
        module.setup("fit")
        return module

    loader_data, device_data = datamodule(False), datamodule(True)
    global CLOCK
    if not on_cuda and loader_data.num_workers == 0 and torch.get_num_threads() == 1:
        CLOCK = time.process_time
    clock = "process CPU time" if CLOCK is time.process_time else "wall time"
    machine = torch.cuda.get_device_name(device) if on_cuda else platform.processor() or platform.machine()
    print(f"device {device} ({machine}), {torch.get_num_threads()} threads, precision {precision}, channels_last "
          f"{channels_last}, dataset {dataset}, batch {batch_size}, {batches} batches x {args.rounds} rounds, "
          f"workers {loader_data.num_workers}, clock: {clock}", flush=True)

    t_loader, t_device = data_only(loader_data, batches, device), data_only(device_data, batches, device)
    images = batches * batch_size
    print(f"data only: DataLoader {images / t_loader:,.0f} img/s, device {images / t_device:,.0f} img/s "
          f"(device/DataLoader time {t_device / t_loader:.3f})", flush=True)

    overhead = loop_overhead(device_data, device, precision, channels_last, batches=60)
    print(f"fit's own cost over the bare loop (linear model): {overhead['ms_per_step']} ms per step, "
          f"{overhead['ms_per_fit_call']} ms per fit call", flush=True)
    result: dict = {"fit_overhead": overhead, "device": str(device), "clock": clock, "precision": precision, "channels_last": channels_last, "dataset": dataset,
                    "batch_size": batch_size, "batches": batches, "threads": torch.get_num_threads(),
                    "data_only_device_over_dataloader": round(t_device / t_loader, 3), "networks": {}}
    for name, make in networks(device, args.width).items():
        torch.manual_seed(0)
        base = make()
        models = {key: copy.deepcopy(base).to(device) for key in ("fit", "fit_device")}
        bare = {key: Bare(copy.deepcopy(base), device, precision, channels_last) for key in ("bare", "bare_device")}
        contenders = {
            "bare": lambda: bare["bare"].run(loader_data, batches, args.val_batches),
            "fit": lambda: run_fit(models["fit"], loader_data, device, precision, channels_last, batches,
                                   args.val_batches),
            "bare_device": lambda: bare["bare_device"].run(device_data, batches, args.val_batches),
            "fit_device": lambda: run_fit(models["fit_device"], device_data, device, precision, channels_last, batches,
                                          args.val_batches),
        }
        times = measure(contenders, args.rounds)
        speeds = rates(times, images)
        ratios = {
            # Both data paths measure the same Lightning overhead: their rounds are pooled for the headline.
            "fit_over_bare": pooled_ratio(times, [("fit", "bare"), ("fit_device", "bare_device")]),
            "fit_over_bare_dataloader": ratio(times, "fit", "bare"),
            "fit_device_over_bare_device": ratio(times, "fit_device", "bare_device"),
            "device_data_over_dataloader": ratio(times, "fit_device", "fit"),
        }
        print(f"{name}: " + ", ".join(f"{key} {rate:,.0f} img/s" for key, rate in speeds.items()), flush=True)
        print(f"{name}: " + ", ".join(f"{key} {value:.3f}" for key, value in ratios.items()), flush=True)
        result["networks"][name] = {**ratios, "images_per_second": {k: round(v, 1) for k, v in speeds.items()}}

    supernet = Supernet(supernet_width, device, precision, channels_last)
    plain = Bare(supernet.plain, device, precision, channels_last, optimizer_per_run=False)
    source = device_data if on_cuda else loader_data  # on CUDA the data path is not what this line measures
    times = measure({"supernet_bare": lambda: plain.run(source, batches, 0),
                     "supernet": lambda: supernet.run(source, batches)}, args.rounds)
    speeds = rates(times, images)
    step_ratio = ratio(times, "supernet", "supernet_bare")
    print(f"supernet (ScopedResNet50 m, width {supernet_width}, pinned path): "
          + ", ".join(f"{key} {rate:,.0f} img/s" for key, rate in speeds.items())
          + f", supernet_step/bare {step_ratio:.3f}", flush=True)
    result["supernet"] = {"width_multiplier": supernet_width, "supernet_step_over_bare": step_ratio,
                          "images_per_second": {k: round(v, 1) for k, v in speeds.items()}}
    first = next(iter(result["networks"].values()))
    result["ratios"] = {"fit_over_bare": first["fit_over_bare"],
                        "supernet_step_over_bare": result["supernet"]["supernet_step_over_bare"],
                        "device_data_over_dataloader": first["device_data_over_dataloader"]}
    print(json.dumps(result))


def measure(contenders: dict[str, Callable[[], None]], rounds: int) -> dict[str, list[float]]:
    """Seconds per contender and round, after one warm-up round. Contenders alternate within a round, in
    reverse order every other round (A B B A), so a slow drift of the machine favours none of them."""
    for step in contenders.values():
        step()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for round_index in range(rounds):
        for name in names if round_index % 2 == 0 else reversed(names):
            times[name].append(timed(contenders[name]))
    return times


def ratio(times: dict[str, list[float]], over: str, under: str) -> float:
    """Median over rounds of the time ratio within a round: contenders of one round ran back to back, so
    a burst of load elsewhere cancels out of their ratio more than out of either median."""
    return round(statistics.median(a / b for a, b in zip(times[over], times[under])), 3)


def pooled_ratio(times: dict[str, list[float]], pairs: list[tuple[str, str]]) -> float:
    """The median of the within-round ratios of several (over, under) pairs that measure the same thing."""
    return round(statistics.median(a / b for over, under in pairs for a, b in zip(times[over], times[under])), 3)


class Linear(torch.nn.Module):
    """A network that costs nearly nothing: what is left of a step is the loop's own bookkeeping."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3 * 32 * 32, 10)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fc(images.flatten(1))


def loop_overhead(datamodule, device, precision, channels_last, batches: int) -> dict[str, float]:
    """fit's own cost over the bare loop, in ms per step and ms per fit call, on a linear model."""
    bare, model = Bare(Linear(), device, precision, channels_last), Linear().to(device)
    times = measure({"bare": lambda: bare.run(datamodule, batches, 1),
                     "fit": lambda: run_fit(model, datamodule, device, precision, channels_last, batches, 1),
                     "bare_one": lambda: bare.run(datamodule, 1, 1),
                     "fit_one": lambda: run_fit(model, datamodule, device, precision, channels_last, 1, 1)}, 4)
    per_call = statistics.median(f - b for f, b in zip(times["fit_one"], times["bare_one"]))
    per_step = (statistics.median(f - b for f, b in zip(times["fit"], times["bare"])) - per_call) / (batches - 1)
    return {"ms_per_step": round(per_step * 1e3, 2), "ms_per_fit_call": round(per_call * 1e3, 1)}


def rates(times: dict[str, list[float]], images: int) -> dict[str, float]:
    return {name: images / statistics.median(values) for name, values in times.items()}


if __name__ == "__main__":
    main()

"""The throughput benchmark's GPU mode as gpu_check.py runs it, with train_throughput.py's own contenders and timing.

Per network and precision, the four contenders of train_throughput.py on the same initial weights: the bare loop
and trainers.fit, each over the DataLoader path and the device-resident path (trainers/device_data.py), run in
alternating rounds (train_throughput.measure); images per second from each contender's median round, ratios
as the median of within-round time ratios (1.05: 5% slower). Channels-last and precision as a run resolves
them ("auto" channels_last: on with mixed precision). The networks are the ones the paper configs train most:
- resnet56: the CIFAR ResNet-56 (3 x 9 basic blocks, 16/32/64) at 32 px, batch 128 (the stage-wise batch);
- resnet50_224: ResNet-50 with the 7x7 stem at 224 px, batch 64 (the ProxylessNAS batch), CIFAR-shaped data
  resized to 224 once at set-up as the ProxylessNAS configs do.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import torch

import train_throughput as throughput
from search_spaces.builder import build_model
from search_spaces.spec import cifar_resnet_spec, resnet_spec
from trainers import make_datamodule
from trainers.speed import SpeedError, resolve_channels_last, resolve_precision

PRECISIONS = {"bf16": "bf16-mixed", "fp32": "32"}


@dataclass(frozen=True)
class Network:
    image_size: int
    batch_size: int
    make: Callable[[], torch.nn.Module]
    resized: bool  # its data set is the small one resized up (memory), not the 32 px one


def networks(tiny: bool) -> dict[str, Network]:
    if tiny:
        return {"resnet56": Network(32, 16, lambda: build_model(cifar_resnet_spec((1, 1, 1))), False),
                "resnet50_224": Network(64, 8, lambda: build_model(resnet_spec(50, num_classes=10,
                                                                               width_multiplier=0.0625)), True)}
    return {"resnet56": Network(32, 128, lambda: build_model(cifar_resnet_spec((9, 9, 9))), False),
            "resnet50_224": Network(224, 64, lambda: build_model(resnet_spec(50, num_classes=10)), True)}


def datamodules(dataset: str, network: Network, device: torch.device):
    """(DataLoader path, device-resident path) over the same split; the DataLoader's workers as a run sizes them."""
    def make(on_device: bool):
        module = make_datamodule(dataset, data_dir="data", batch_size=network.batch_size, download=False,
                                 num_workers=None, data_on_device=on_device, device=device,
                                 image_size=network.image_size)
        module.setup("fit")
        return module

    return make(False), make(True)


def data_only(loader_data, device_data, batches: int, device: torch.device) -> dict[str, float]:
    images = batches * loader_data.batch_size
    t_loader = throughput.data_only(loader_data, batches, device)
    t_device = throughput.data_only(device_data, batches, device)
    return {"dataloader_images_per_second": round(images / t_loader, 1),
            "device_images_per_second": round(images / t_device, 1),
            "device_over_dataloader": round(t_device / t_loader, 3),
            "dataloader_workers": loader_data.num_workers}


def network_row(network: Network, loader_data, device_data, device: torch.device, precision_name: str,
                batches: int, rounds: int, val_batches: int = 2) -> dict:
    """One network in one precision: the four contenders' images per second and their ratios."""
    try:
        precision = resolve_precision(PRECISIONS[precision_name], device)
    except SpeedError as error:
        return {"skipped": str(error)}
    channels_last = resolve_channels_last("auto", device, precision)
    torch.manual_seed(0)
    base = network.make()
    models = {key: copy.deepcopy(base).to(device) for key in ("fit", "fit_device")}
    bare = {key: throughput.Bare(copy.deepcopy(base), device, precision, channels_last)
            for key in ("bare", "bare_device")}
    contenders = {
        "bare": lambda: bare["bare"].run(loader_data, batches, val_batches),
        "fit": lambda: throughput.run_fit(models["fit"], loader_data, device, precision, channels_last, batches,
                                          val_batches),
        "bare_device": lambda: bare["bare_device"].run(device_data, batches, val_batches),
        "fit_device": lambda: throughput.run_fit(models["fit_device"], device_data, device, precision,
                                                 channels_last, batches, val_batches),
    }
    times = throughput.measure(contenders, rounds)
    speeds = throughput.rates(times, batches * network.batch_size)
    return {
        "precision": precision,
        "channels_last": channels_last,
        "batch_size": network.batch_size,
        "image_size": network.image_size,
        "batches_per_round": batches,
        "rounds": rounds,
        "images_per_second": {name: round(rate, 1) for name, rate in speeds.items()},
        "fit_over_bare": throughput.pooled_ratio(times, [("fit", "bare"), ("fit_device", "bare_device")]),
        "device_data_over_dataloader": throughput.ratio(times, "fit_device", "fit"),
        "bare_device_over_bare_dataloader": throughput.ratio(times, "bare_device", "bare"),
    }

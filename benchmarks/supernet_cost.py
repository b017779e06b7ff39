"""Cost of a ProxylessNAS supernet step against the plain network of the same sampled path.

For each repetition one random path of ScopedResNet50(scope) is drawn; then, side by side on that path:
- plain: build_model(space.to_spec(path)), forward + backward + SGD step (the fair baseline);
- ours: strategies.proxyless.search weight step, architecture step, and one iteration (both);
- NNI 3.0 stock: `Proxyless().mutate_model(space)` driven like its DartsLightningModule.training_step
  (arch step with NNI's Adam(lr 3e-4, betas 0.5/0.999, wd 1e-3), then weight step). Its ReLUs run out of
  place: NNI's _ProxylessFunction saves each layer's input, which an in-place ReLU would overwrite.
Per path, the five contenders alternate one step at a time for --rounds rounds; each contender's median
time gives that path's ratios, and the reported figure is the median over paths (absolute times drift on
shared machines, ratios measured side by side much less).

The hub row does the same on a space nobody here wrote, NNI's hub ProxylessNAS (MobileNetV2 blocks, Repeats
of LayerChoices) at --hub-width: ProxylessStrategy's supernet (its mutate_model, Repeat depths gated too)
against `Proxyless().mutate_model`, pinned to the same path (NNI's per-block "in_repeat" gates set to the
path's depth), each step over the plain network of that path (`model_context(path)`).

Memory: the peak of glibc's live heap (mallinfo2: in-use chunks + mmapped blocks), sampled after every
dispatched torch op during one weight step, minus the heap before the step (activations, gradients,
temporaries, optimizer state created by the step). CPU tensors live on that heap.

Usage: python benchmarks/supernet_cost.py [--quick] [--scope f] [--repeats 7] [--hub-width 0.25 (0: no hub row)]
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from search_spaces import ScopedResNet50, build_model  # noqa: E402
from strategies.proxyless import ProxylessSearchConfig  # noqa: E402
from strategies.proxyless.search import ProxylessSearch  # noqa: E402


# ---- memory -------------------------------------------------------------------------------------------
class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


_libc = ctypes.CDLL("libc.so.6")
_libc.mallinfo2.restype = _MallInfo2


def heap_in_use() -> int:
    info = _libc.mallinfo2()
    return info.uordblks + info.hblkhd


class PeakHeap(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.start = heap_in_use()
        self.peak = self.start

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.peak = max(self.peak, heap_in_use())
        return out

    @property
    def increase(self) -> int:
        return self.peak - self.start


def peak_memory(step) -> int:
    step()  # warm: optimizer state and allocator caches exist before the measured step
    with PeakHeap() as mode:
        step()
    return mode.increase


# ---- the three contenders -----------------------------------------------------------------------------
def make_space(args) -> ScopedResNet50:
    return ScopedResNet50(args.scope, num_classes=10, width_multiplier=args.width, stem="imagenet")


class Plain:
    def __init__(self, model: nn.Module):
        self.model = model.train()
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=4e-5)

    def weight_step(self, x, y):
        loss = F.cross_entropy(self.model(x), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()


class Ours:
    def __init__(self, search: ProxylessSearch):
        self.search = search

    def pinned(self, path: dict) -> dict[str, int]:
        values = self.search.bank.candidate_values
        return {label: values[label].index(value) for label, value in path.items()}

    def weight_step(self, path, x, y):
        self.search.weight_step(x, y, self.pinned(path))

    def arch_step(self, path, x, y):
        self.search.arch_step(x, y, self.pinned(path))


class NniStock:
    def __init__(self, space: nn.Module):
        from nni.nas.oneshot.pytorch.strategy import Proxyless
        from nni.nas.oneshot.pytorch.supermodule.base import BaseSuperNetModule

        for module in space.modules():  # NNI's _ProxylessFunction saves layer inputs: in-place ReLU breaks it
            if isinstance(module, (nn.ReLU, nn.ReLU6)):
                module.inplace = False
        self.model = Proxyless().mutate_model(space).train()
        self.supernet_modules = [m for m in self.model.modules() if isinstance(m, BaseSuperNetModule)]
        # As NNI's DartsLightningModule.arch_parameters: a ProxylessMixedRepeat has none of its own.
        arch = {id(p): p for m in self.supernet_modules if hasattr(m, "arch_parameters") for p in m.arch_parameters()}
        self.arch_optimizer = torch.optim.Adam(list(arch.values()), 3e-4, betas=(0.5, 0.999), weight_decay=1e-3)
        weights = [p for p in self.model.parameters() if id(p) not in arch]
        self.weight_optimizer = torch.optim.SGD(weights, lr=0.05, momentum=0.9, nesterov=True, weight_decay=4e-5)

    def memo(self, path: dict) -> dict:
        return dict(path)

    def resample(self, path: dict) -> None:
        memo = self.memo(path)
        for module in self.supernet_modules:
            memo.update(module.resample(memo=memo))

    def weight_step(self, path, x, y):
        self.resample(path)
        loss = F.cross_entropy(self.model(x), y)
        self.weight_optimizer.zero_grad()
        loss.backward()
        self.weight_optimizer.step()

    def arch_step(self, path, x, y):
        self.resample(path)
        self.arch_optimizer.zero_grad()
        F.cross_entropy(self.model(x), y).backward()
        self.arch_optimizer.step()


# ---- NNI's hub ProxylessNAS space ---------------------------------------------------------------------
def hub_space(args) -> nn.Module:
    from nni.nas.hub.pytorch import ProxylessNAS

    return ProxylessNAS(num_labels=10, width_mult=args.hub_width)


class HubNni(NniStock):
    """NNI's Proxyless turns a Repeat into one Identity-or-block gate per optional block (label
    "<depth label>/in_repeat_<i>"): the first `depth` blocks are the path's."""

    def memo(self, path: dict) -> dict:
        memo = dict(path)
        for module in self.supernet_modules:
            label = getattr(module, "label", "")
            depth_label, marker, block = label.partition("/in_repeat_")
            if marker:
                memo[label] = "1" if int(block) < path[depth_label] else "0"
        return memo


def hub_row(args, x: torch.Tensor, y: torch.Tensor) -> dict:
    from nni.nas.space import model_context

    from strategies.proxyless.strategy import ProxylessStrategy

    strategy = ProxylessStrategy(gradient_estimator=args.estimator)
    space = strategy.mutate_model(hub_space(args))
    ours, stock = Ours(ProxylessSearch(space, strategy.config, bank=strategy.bank)), HubNni(hub_space(args))
    generator = torch.Generator().manual_seed(1)
    rows = []
    for repeat in range(args.repeats):
        path = {label: values[int(torch.randint(len(values), (), generator=generator))]
                for label, values in strategy.bank.candidate_values.items()}
        with model_context(path):
            plain = Plain(hub_space(args))
        t_plain, t_ours_w, t_ours_a, t_stock_w, t_stock_a = time_path(plain, ours, stock, path, x, y, args.rounds)
        rows.append({"weight": t_ours_w / t_plain, "arch": t_ours_a / t_plain, "nni_weight": t_stock_w / t_plain,
                     "nni_arch": t_stock_a / t_plain, "weight_speedup": t_stock_w / t_ours_w,
                     "arch_speedup": t_stock_a / t_ours_a})
        depths = {label: value for label, value in path.items() if label.endswith("_depth")}
        print(f"hub repeat {repeat} (depths {list(depths.values())}): plain {t_plain * 1e3:.0f} ms, "
              + ", ".join(f"{k} {v:.2f}" for k, v in rows[-1].items()), flush=True)
    median = {key: round(statistics.median(row[key] for row in rows), 3) for key in rows[0]}
    return {
        "space": "nni.nas.hub.pytorch.ProxylessNAS",
        "width_mult": args.hub_width,
        "weight_step_ratio": median["weight"],
        "arch_step_ratio": median["arch"],
        "nni_weight_step_ratio": median["nni_weight"],
        "nni_arch_step_ratio": median["nni_arch"],
        "weight_speedup_vs_nni": median["weight_speedup"],
        "arch_speedup_vs_nni": median["arch_speedup"],
    }


def time_path(plain, ours, stock, path: dict, x: torch.Tensor, y: torch.Tensor, rounds: int) -> tuple[float, ...]:
    """Seconds per step of one path, interleaved: plain, ours weight, ours arch, NNI weight, NNI arch."""
    steps = {
        "plain": lambda: plain.weight_step(x, y),
        "ours_weight": lambda: ours.weight_step(path, x, y),
        "ours_arch": lambda: ours.arch_step(path, x, y),
        "nni_weight": lambda: stock.weight_step(path, x, y),
        "nni_arch": lambda: stock.arch_step(path, x, y),
    }
    return tuple(interleaved(steps, rounds).values())


def interleaved(steps: dict, rounds: int) -> dict[str, float]:
    """Each step's median time; the steps alternate one at a time, so a burst of load elsewhere hits all alike."""
    for step in steps.values():  # warm-up
        step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            times[name].append(timed(step))
    return {name: statistics.median(values) for name, values in times.items()}


def timed(step) -> float:
    started = time.perf_counter()
    step()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="narrow widths and 3 repetitions (smoke run)")
    parser.add_argument("--scope", default="f")
    parser.add_argument("--repeats", type=int, default=7, help="sampled paths")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timings per contender and path")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--estimator", default="two_path", choices=("two_path", "full"))
    parser.add_argument("--hub-width", type=float, default=0.25, help="NNI hub ProxylessNAS width_mult; 0: no hub row")
    args = parser.parse_args()
    if args.quick:
        args.width, args.repeats = 0.25, 3
    torch.manual_seed(0)
    x = torch.randn(args.batch, 3, args.size, args.size)
    y = torch.randint(0, 10, (args.batch,))
    space = make_space(args)
    config = ProxylessSearchConfig(input_size=(3, args.size, args.size), gradient_estimator=args.estimator)
    ours, stock = Ours(ProxylessSearch(make_space(args), config)), NniStock(make_space(args))

    rows = []
    for repeat in range(args.repeats):
        path: dict = {}
        space.random(memo=path)
        plain = Plain(build_model(space.to_spec(path)))
        t_plain, t_ours_w, t_ours_a, t_stock_w, t_stock_a = time_path(plain, ours, stock, path, x, y, args.rounds)
        rows.append(
            {
                "weight": t_ours_w / t_plain,
                "arch": t_ours_a / t_plain,
                "train": (t_ours_w + t_ours_a) / t_plain,
                "nni_weight": t_stock_w / t_plain,
                "nni_arch": t_stock_a / t_plain,
                "nni_train": (t_stock_w + t_stock_a) / t_plain,
                "speedup": (t_stock_w + t_stock_a) / (t_ours_w + t_ours_a),
            }
        )
        print(f"repeat {repeat}: plain {t_plain * 1e3:.0f} ms, " + ", ".join(f"{k} {v:.2f}" for k, v in rows[-1].items()),
              flush=True)
        if repeat == 0:
            memory = {
                "plain": peak_memory(lambda: plain.weight_step(x, y)),
                "ours": peak_memory(lambda: ours.weight_step(path, x, y)),
                "nni": peak_memory(lambda: stock.weight_step(path, x, y)),
            }
            print("weight-step peak heap increase (MiB): " + ", ".join(f"{k} {v / 2**20:.1f}" for k, v in memory.items()))

    def median(key: str) -> float:
        return round(statistics.median(row[key] for row in rows), 3)

    # The architecture update every k-th step: an iteration then costs weight + arch / k.
    weight, arch = median("weight"), median("arch")
    every_k = {str(k): round(weight + arch / k, 3) for k in (1, 2, 4)}
    result = {
        "scope": args.scope,
        "width_multiplier": args.width,
        "batch": args.batch,
        "input": args.size,
        "estimator": args.estimator,
        "repeats": args.repeats,
        "rounds": args.rounds,
        "weight_step_ratio": weight,
        "arch_step_ratio": arch,
        "train_step_ratio": median("train"),
        "weight_step_memory_ratio": round(memory["ours"] / memory["plain"], 3),
        "nni_weight_step_ratio": median("nni_weight"),
        "nni_arch_step_ratio": median("nni_arch"),
        "nni_train_step_ratio": median("nni_train"),
        "nni_weight_step_memory_ratio": round(memory["nni"] / memory["plain"], 3),
        "speedup_vs_nni": median("speedup"),
        "train_step_ratio_arch_every_k": every_k,
        "hub": hub_row(args, x, y) if args.hub_width else None,
        "threads": torch.get_num_threads(),
        "malloc": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")} or "glibc defaults",
        "machine": platform.machine(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()

"""The prepared GPU check: throughput, one epoch of every paper config's training, projected GPU-hours, peak memory.

Made for the lent GPU machine (one H100, a few minutes, Python with torch, timm, Lightning, scikit-learn and
tensorboard but no NNI): nothing on its import path imports NNI (benchmarks/nni_free.py loads the method packages'
NNI-free modules and builds the ProxylessNAS supernet without NNI's space), every job runs in its own try/except
(a failure is reported with its error and the rest still runs), and the run stops starting jobs before
--budget-s, printing what it measured. Jobs, in order:
- proxyless_search_{s,m,l,f}: ProxylessSearch.run_epoch on the gated ResNet-50 of each scope at the config's
  224 px (nni_configs/proxyless_scope_m.yml); proxyless_retrain_{plain,costliest}: the retrain (fit) of the plain
  ResNet-50 and of scope f's costliest path;
- nash_{start,child_first,child_last}: a NASH neighbour's SGDR training (nni_configs/hill_climbing.yml) of the
  start net, of the first step's child and of the last step's (where every step's first child wins);
- resbuilder_{with_reg,no_reg}: a ResBuilder step's training with LayerLasso + MorphNet and without
  (nni_configs/layer_pruning.yml);
- stagewise_{start,deepest}: a stage-wise candidate (nni_configs/stagewise.yml) at the start and deepest depths;
- latency_check: a latency table of the device (batch 8, fp32), calibrated, and the predictor's +-10 % check on 5
  architectures of each of scope m, CIFAR depth, NASH and ResBuilder, with the device's repeatability
  (gpu_latency.py; about a minute on a GPU, before the throughput rows: the GPU figure issue 23 still lacks);
- throughput_*: benchmarks/train_throughput.py's contenders on ResNet-56 (32 px) and ResNet-50 (224 px), bf16 and
  fp32, device-resident data against the DataLoader (gpu_throughput.py).
Epoch timings: see gpu_jobs.py (timed epochs of a few batches, extrapolated to CIFAR-10's epoch). Projections:
gpu_projection.py. Data: synthetic, CIFAR-10's shape and statistics (no download).

Usage: python benchmarks/gpu_check.py [--device cuda|cpu] [--preset full|tiny] [--out FILE] [--budget-s S]
stdout's one line is the JSON result (progress goes to stderr); --out writes it too, after every job.
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()  # before the heavy imports: the budget counts them

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]  # the repository (resnas's packages) and the benchmarks beside this

import torch  # noqa: E402
import yaml  # noqa: E402  (a dependency of pytorch-lightning)

import gpu_jobs as jobs  # noqa: E402
import gpu_latency  # noqa: E402
import gpu_projection  # noqa: E402
import gpu_throughput  # noqa: E402
import nni_free  # noqa: E402
from strategies.data import make_job_datamodule  # noqa: E402

CONFIGS = HERE.parent / "nni_configs"
# Lightning 2.6 on torch 2.14 warns on every fit that torch's pytree LeafSpec is deprecated: noise in the log.
warnings.filterwarnings("ignore", message=".*LeafSpec.*")


def class_args(name: str) -> dict[str, Any]:
    return yaml.safe_load((CONFIGS / f"{name}.yml").read_text())["tuner"]["classArgs"]


class Run:
    """The jobs' results, the budget, and the data modules jobs share (built inside the first job that needs one,
    so its failure is that job's)."""

    def __init__(self, device: torch.device, preset: jobs.Preset, budget_s: float, out: Path | None):
        self.device, self.preset, self.budget_s, self.out = device, preset, budget_s, out
        self.results: dict[str, dict[str, Any]] = {}
        self.shared: dict[str, Any] = {}
        self.stopped_early = False

    def elapsed(self) -> float:
        return time.perf_counter() - STARTED

    def data(self, key: str, make: Callable[[], Any]) -> Any:
        if key not in self.shared:
            self.shared[key] = make()
        return self.shared[key]

    def release(self) -> None:
        """Drop the shared data modules (their device-resident pools) before the next family of jobs."""
        self.shared.clear()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def job(self, name: str, function: Callable[[], dict[str, Any]]) -> None:
        if self.elapsed() > self.budget_s - self.preset.reserve_s:
            self.stopped_early = True
            self.results[name] = {"skipped": f"budget: {self.elapsed():.0f} s of --budget-s {self.budget_s:.0f} used"}
            return
        on_cuda = self.device.type == "cuda"
        if on_cuda:  # the last job's cycles (Trainer <-> module) freed, so its tensors do not count in this peak
            gc.collect()
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        try:
            result = function()
        except Exception as error:  # one job's failure is its own line of the report
            result = failure(error)
        result["seconds"] = round(time.perf_counter() - started, 2)
        result["peak_gpu_memory_bytes"] = torch.cuda.max_memory_allocated() if on_cuda else None
        self.results[name] = result
        status = result.get("error") or result.get("skipped") or (
            f"{result['images_per_second']} img/s" if "images_per_second" in result else "done")
        print(f"[{self.elapsed():6.1f} s] {name}: {status}", file=sys.stderr, flush=True)
        self.write(self.report({}))

    def report(self, projections: dict[str, Any]) -> dict[str, Any]:
        on_cuda = self.device.type == "cuda"
        return {
            "preset": self.preset.name,
            "device": str(self.device),
            "device_name": torch.cuda.get_device_name(self.device) if on_cuda else platform.processor() or "cpu",
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "tf32": {"matmul": getattr(torch.backends.cuda.matmul, "allow_tf32", None),
                     "cudnn": getattr(torch.backends.cudnn, "allow_tf32", None)},
            "threads": torch.get_num_threads(),
            "seconds": round(self.elapsed(), 1),
            "budget_s": self.budget_s,
            "stopped_early": self.stopped_early,
            "nni_importable": nni_importable(),
            "nni_modules_loaded": sorted(name for name, module in sys.modules.items()
                                         if module is not None and (name == "nni" or name.startswith("nni."))),
            "skipped_package_inits": dict(nni_free.SKIPPED_INITS),
            "jobs": self.results,
            "projections": projections,
        }

    def write(self, result: dict[str, Any]) -> None:
        if self.out is not None:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            self.out.write_text(json.dumps(result) + "\n")


def nni_importable() -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec("nni") is not None
    except (ImportError, ValueError):  # a blocker (sys.modules["nni"] = None, a raising finder) raises here
        return False


def with_pool_facts(result: dict[str, Any], datamodule) -> dict[str, Any]:
    """The device-resident pool the job's data module holds (part of its peak memory), and what CIFAR-10's 60,000
    images would take at the same size."""
    pool = datamodule.device_pool or {}
    held = sum(tensor.nbytes for split in pool.values() for tensor in split
               if isinstance(tensor, torch.Tensor) and tensor.device.type != "cpu")
    side = datamodule.image_size
    return {**result, "device_pool_bytes": held, "cifar10_pool_bytes": 60_000 * 3 * side * side if pool else 0}


def paper_job(run: Run, name: str, settings, body: Callable[[Any], dict[str, Any]]) -> None:
    """A job of one method's family: body(data module) on the family's shared data module (built by the first)."""
    def job() -> dict[str, Any]:
        datamodule = run.data("datamodule", lambda: make_job_datamodule(settings))
        return with_pool_facts(body(datamodule), datamodule)

    run.job(name, job)


# ---- the families: each parses its config, runs its jobs and returns its settings (for the projection) ---------
def proxyless_family(run: Run):
    preset, device = run.preset, run.device
    settings = jobs.proxyless_settings(class_args("proxyless_scope_m"), preset)
    for scope in ("s", "m", "l", "f"):
        paper_job(run, f"proxyless_search_{scope}", settings, lambda datamodule, scope=scope: jobs.proxyless_search(
            settings, scope, datamodule, preset, device))
    for name, costliest in (("plain", False), ("costliest", True)):
        spec = jobs.proxyless_retrain_spec(settings, costliest)
        paper_job(run, f"proxyless_retrain_{name}", settings, lambda datamodule, spec=spec: jobs.proxyless_retrain(
            settings, spec, datamodule, preset, device))
    return settings


def nash_family(run: Run):
    settings = jobs.method_settings("hill_climbing", "parse_hill_climbing_args", class_args("hill_climbing"),
                                    run.preset)
    for name, spec in jobs.nash_specs(settings).items():
        paper_job(run, f"nash_{name}", settings, lambda datamodule, spec=spec: jobs.nash_job(
            settings, spec, datamodule, run.preset, run.device))
    return settings


def resbuilder_family(run: Run):
    settings = jobs.method_settings("layer_pruning", "parse_layer_pruning_args", class_args("layer_pruning"),
                                    run.preset)
    spec = jobs.resbuilder_spec(settings)
    for name, with_reg in (("with_reg", True), ("no_reg", False)):
        paper_job(run, f"resbuilder_{name}", settings, lambda datamodule, with_reg=with_reg: jobs.resbuilder_job(
            settings, spec, with_reg, datamodule, run.preset, run.device))
    return settings


def stagewise_family(run: Run):
    settings = jobs.method_settings("stagewise", "parse_stagewise_args", class_args("stagewise"), run.preset)
    for name, depths in jobs.stagewise_depths(settings).items():
        paper_job(run, f"stagewise_{name}", settings, lambda datamodule, depths=depths: jobs.stagewise_job(
            settings, depths, datamodule, run.preset, run.device))
    return settings


def throughput_family(run: Run) -> None:
    preset, device = run.preset, run.device
    for name, network in gpu_throughput.networks(preset.name == "tiny").items():
        dataset = jobs.synthetic_dataset(preset, network.resized)
        batches = preset.throughput_batches[name]

        def pair(network=network, dataset=dataset, name=name):
            return run.data(f"throughput_{name}", lambda: gpu_throughput.datamodules(dataset, network, device))

        run.job(f"throughput_{name}_data_only", lambda pair=pair, batches=batches: gpu_throughput.data_only(
            *pair(), batches, device))
        for precision in gpu_throughput.PRECISIONS:
            run.job(f"throughput_{name}_{precision}", lambda pair=pair, network=network, precision=precision,
                    batches=batches: gpu_throughput.network_row(network, *pair(), device, precision, batches,
                                                                preset.throughput_rounds))
        run.release()


# The paper configs first (they feed the projections), then the throughput rows (the longest, cut short first).
def latency_family(run: Run) -> None:
    latency = run.preset.latency
    run.job("latency_check", lambda: gpu_latency.latency_check(run.device, latency["spaces"], latency["count"],
                                                              latency["batch_size"], latency["quick"]))


FAMILIES = {"proxyless_table1": proxyless_family, "nash_table2": nash_family, "resbuilder_cifar10": resbuilder_family,
            "stagewise_cifar10": stagewise_family, "latency": latency_family, "throughput": throughput_family}


def schedule(run: Run) -> dict[str, Any]:
    """Every family in order; a family whose set-up fails (its config, its specs) is reported as `<family>_setup`
    and the others still run. Returns each method's settings as used, for the projections."""
    settings = {}
    for name, family in FAMILIES.items():
        try:
            settings[name] = family(run)
        except Exception as error:
            run.results[f"{name}_setup"] = failure(error)
        finally:
            run.release()
    return settings


def failure(error: Exception) -> dict[str, Any]:
    return {"error": f"{type(error).__name__}: {error}",
            "traceback": traceback.format_exc(limit=-6).strip().splitlines()[-12:]}


def project(run: Run, settings: dict[str, Any]) -> dict[str, Any]:
    projections = {}
    for name, function in gpu_projection.PROJECTIONS.items():
        try:
            if name not in settings:
                raise KeyError(f"the {name} family did not set up; see jobs.{name}_setup")
            projections[name] = function(run.results, settings[name])
        except Exception as error:  # a job it needs failed or was skipped
            projections[name] = {"error": f"{type(error).__name__}: {error}"}
    return projections


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default=None, help="default: cuda when there is one")
    parser.add_argument("--preset", choices=tuple(jobs.PRESETS), default="full")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here (after every job)")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="start no job after this many seconds from start-up (default: "
                             + ", ".join(f"{name} {preset.budget_s:.0f}" for name, preset in jobs.PRESETS.items()) + ")")
    args = parser.parse_args()
    if args.device == "cpu":  # before anything asks CUDA, which reads this once: the data modules stay on the CPU
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    elif args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch sees no CUDA GPU here; run with --device cpu (e.g. --preset tiny).")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as fit's Trainer sets it: the search and bare loops get it too
    preset = jobs.PRESETS[args.preset]
    run = Run(device, preset, preset.budget_s if args.budget_s is None else args.budget_s, args.out)
    result = run.report(project(run, schedule(run)))
    run.write(result)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()

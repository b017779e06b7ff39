"""timm's own model tests on one network of each method's space: does an export keep the contract timm holds every
timm model to? (issue 24; tests/test_timm_contract.py is resnas's own conformance suite, this runs timm's.)

timm's wheel does not ship its tests: give its tests/test_models.py from a checkout of the installed version, e.g.

    git -C pytorch-image-models show v1.0.31:tests/test_models.py > /tmp/timm_test_models.py
    python benchmarks/timm_own_tests.py /tmp/timm_test_models.py

Each network (tests/test_timm_contract.py's: scoped ResNet-50, NASH morphed, ResBuilder grown, stage-wise CIFAR)
is registered as a timm model `resnas_probe_<method>` (resnas_net with that ArchSpec and its default cfg) before
timm's module is imported, and timm's test functions are called for it with the batch sizes of their own
parametrization; one line per test and network, then the count. Exit status 1 when any fails.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import traceback
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import pytest  # noqa: E402  (timm's tests skip through it)
import torch  # noqa: E402
from timm.models import generate_default_cfgs, register_model  # noqa: E402

from search_spaces.timm_entry import resnas_net  # noqa: E402

# timm's test name -> the batch size its own parametrization uses
TIMM_TESTS = {
    "test_model_forward": 1,
    "test_model_backward": 2,
    "test_model_default_cfgs": 1,
    "test_model_forward_torchscript": 1,
    "test_model_forward_features": 1,
    "test_model_forward_intermediates_features": 1,
    "test_model_forward_intermediates": 1,
    "test_model_forward_fx": 1,
    "test_model_backward_fx": 2,
}
NETWORKS = {"scoped": "scoped_resnet50", "nash": "nash_morphed", "resbuilder": "resbuilder_grown",
            "stagewise": "stagewise_cifar"}


def load_module(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def register_probes() -> list[str]:
    """One timm model per network, registered from this module (register_model reads its `default_cfgs`)."""
    contract = load_module("resnas_timm_contract", REPO / "tests" / "test_timm_contract.py")
    names = []
    for method, builder in NETWORKS.items():
        torch.manual_seed(0)
        spec = getattr(contract, builder)()[0]
        name = f"resnas_probe_{method}"

        def create(pretrained: bool = False, _spec=spec, **kwargs):
            return resnas_net(pretrained, arch_spec=_spec, **kwargs)

        create.__name__ = name
        names.append(name)
        globals()[name] = create
    globals()["default_cfgs"] = generate_default_cfgs({name: dict(
        url="", num_classes=1000, input_size=(3, 224, 224), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
        crop_pct=1.0, interpolation="bilinear", first_conv="conv1", classifier="fc") for name in names})
    for name in names:
        register_model(globals()[name])
    return names


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("timm_tests", type=Path, help="timm's tests/test_models.py, from the installed version")
    args = parser.parse_args()
    if not args.timm_tests.is_file():
        raise SystemExit(f"{args.timm_tests} is not a file; give timm's tests/test_models.py (see this script's "
                         f"docstring for the git command).")
    torch.set_num_threads(1)
    names = register_probes()
    timm_tests = load_module("timm_test_models", args.timm_tests)
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    for test_name, batch_size in TIMM_TESTS.items():
        for name in names:
            torch.manual_seed(0)
            try:
                getattr(timm_tests, test_name)(name, batch_size)
                outcome, why = "passed", ""
            except pytest.skip.Exception as skipped:
                outcome, why = "skipped", str(skipped)
            except Exception as error:  # noqa: BLE001 - every failure is reported, then the next test runs
                outcome, why = "failed", traceback.format_exception_only(error)[-1].strip()
            counts[outcome] += 1
            print(f"{outcome:8} {test_name} [{name}] {why}".rstrip(), flush=True)
    print(", ".join(f"{count} {outcome}" for outcome, count in counts.items()))
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())

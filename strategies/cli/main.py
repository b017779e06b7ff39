"""`resnas`: validate, create / resume (through nnictl, on 127.0.0.1), quickstart, export, plot.

Each subcommand is a Command(add_arguments, run, help) in COMMANDS; export and plot live in their own
modules. Errors a user can cause print one line and exit 2 (errors.UserError and the known error types).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable, NamedTuple

from . import export, plot
from .errors import USER_ERROR, UserError

QUICKSTART_CONFIG = Path(__file__).resolve().parents[2] / "nni_configs" / "quickstart.yml"


def _validate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", type=Path, help="an nnictl YAML, e.g. nni_configs/proxyless_scope_m.yml")
    parser.add_argument(
        "--no-gpu-check", action="store_true",
        help="skip checking that this machine has the GPUs the trials ask for (a config meant for another machine)",
    )


def _validate(args: argparse.Namespace) -> int:
    from ..launch.config import GpuRequestError, load_experiment_config

    try:
        load_experiment_config(args.config, check_gpus=not args.no_gpu_check)
    except GpuRequestError as error:
        raise GpuRequestError(f"{str(error).rstrip('.')} (or pass --no-gpu-check to check it for another machine).")
    print(f"{args.config}: ok" + (" (GPUs not checked)" if args.no_gpu_check else ""))
    return 0


def _create_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, required=True, help="an nnictl YAML under nni_configs/")
    _follow_arguments(parser)


def _follow_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=8080, help="dashboard port (a free one is used if taken)")
    parser.add_argument(
        "--bind-host", default="127.0.0.1",
        help="address the dashboard listens on; 0.0.0.0 exposes NNI's unauthenticated REST API to the network",
    )
    parser.add_argument("--wait", action="store_true", help="block until the experiment ends, print a JSON line")
    parser.add_argument("--timeout", type=float, default=None, help="seconds to wait at most (with --wait)")
    parser.add_argument("--keep", action="store_true", help="leave the manager running after --wait")


def run_experiment(config: Path, port: int, bind_host: str, wait: bool, timeout: float | None, keep: bool) -> int:
    from ..launch import create_experiment

    return follow_experiment(create_experiment(config, port=port, bind_host=bind_host), wait, timeout, keep)


def follow_experiment(handle, wait: bool, timeout: float | None, keep: bool) -> int:
    """Print where the dashboard is; with `wait`, block until the search ends and print its JSON line."""
    from ..launch import experiment_summary, stop_experiment, wait_for_experiment

    print(f"experiment {handle.id} started; dashboard: {handle.url}", flush=True)
    if handle.bind_host == "127.0.0.1":
        print(f"from another machine: ssh -L {handle.port}:127.0.0.1:{handle.port} <this host>, then open {handle.url}")
    if not wait:
        print(f"follow it there, or `nnictl stop {handle.id}` to end it.")
        return 0
    try:
        status = wait_for_experiment(handle, timeout=timeout)
        summary = experiment_summary(handle, status)
    finally:
        if not keep:
            stop_experiment(handle)
    best = summary["best"] or {}
    if isinstance(best, dict) and best:
        print(f"best trial: default={best.get('default')} params={best.get('params')} flops={best.get('flops')}")
        if best.get("architecture"):
            print(f"architecture: {json.dumps(best['architecture'])}")
        if summary["export_dir"]:
            folder = summary["export_dir"]
            print(f"timm folder: {folder}  (timm.create_model('local-dir:{folder}', pretrained=True))")
    line = {key: summary[key] for key in ("experiment", "status", "best", "export_dir", "dashboard")}
    line["trials"] = [{"id": t["id"], "status": t["status"]} for t in summary["trials"]]
    print(json.dumps(line))
    return 0 if summary["status"] in ("DONE", "NO_MORE_TRIAL", "TUNER_NO_MORE_TRIAL") and summary["best"] else 1


def _create(args: argparse.Namespace) -> int:
    return run_experiment(args.config, args.port, args.bind_host, args.wait, args.timeout, args.keep)


def _resume_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("experiment", help="the experiment ID (as `resnas create` printed it)")
    parser.add_argument("--dir", type=Path, default=None,
                        help="the config's experimentWorkingDirectory (the folder holding ID/), if not the default")
    _follow_arguments(parser)


def _resume(args: argparse.Namespace) -> int:
    from ..launch import resume_experiment

    handle = resume_experiment(args.experiment, args.dir, port=args.port, bind_host=args.bind_host)
    return follow_experiment(handle, args.wait, args.timeout, args.keep)


def _quickstart_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=8080)


def _quickstart(args: argparse.Namespace) -> int:
    return run_experiment(QUICKSTART_CONFIG, args.port, "127.0.0.1", wait=True, timeout=1800, keep=False)


class Command(NamedTuple):
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    help: str


COMMANDS: dict[str, Command] = {
    "validate": Command(_validate_arguments, _validate, "check an nnictl YAML and its trial settings; launch nothing"),
    "create": Command(_create_arguments, _create, "launch an experiment (dashboard on 127.0.0.1)"),
    "resume": Command(_resume_arguments, _resume, "resume a stopped or killed experiment (dashboard on 127.0.0.1)"),
    "quickstart": Command(_quickstart_arguments, _quickstart, "run nni_configs/quickstart.yml end to end"),
    "export": Command(export.add_arguments, export.run, export.HELP),
    "plot": Command(plot.add_arguments, plot.run, plot.HELP),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="resnas", description="NAS for ResNet-family classifiers on NNI 3.0")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name, (add_arguments, run, help_text) in COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        add_arguments(sub)
        sub.set_defaults(run=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from search_spaces import ExportError, SpecError
    from trainers import CheckpointError, DataError

    from ..launch import ConfigError, LaunchError

    try:
        return args.run(args)
    except (UserError, ConfigError, LaunchError, SpecError, ExportError, CheckpointError, DataError) as error:
        message = " ".join(str(error).split())  # one line, whatever the exception text held
        print(f"resnas {args.command}: {message}", file=sys.stderr)
        return USER_ERROR

"""`resnas`: validate, create (launch through nnictl on 127.0.0.1), quickstart, export.

Each subcommand is (add_arguments, run) in COMMANDS; errors a user can cause print one line and exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable

USER_ERROR = 2
QUICKSTART_CONFIG = Path(__file__).resolve().parents[1] / "nni_configs" / "quickstart.yml"


class UserError(Exception):
    """An error the user can fix; printed as one line."""


def _validate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", type=Path, help="an nnictl YAML, e.g. nni_configs/proxyless_scope_m.yml")


def _validate(args: argparse.Namespace) -> int:
    from .experiment_config import load_experiment_config

    load_experiment_config(args.config)
    print(f"{args.config}: ok")
    return 0


def _create_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, required=True, help="an nnictl YAML under nni_configs/")
    parser.add_argument("--port", type=int, default=8080, help="dashboard port (a free one is used if taken)")
    parser.add_argument(
        "--bind-host", default="127.0.0.1",
        help="address the dashboard listens on; 0.0.0.0 exposes NNI's unauthenticated REST API to the network",
    )
    parser.add_argument("--wait", action="store_true", help="block until the experiment ends, print a JSON line")
    parser.add_argument("--timeout", type=float, default=None, help="seconds to wait at most (with --wait)")
    parser.add_argument("--keep", action="store_true", help="leave the manager running after --wait")


def run_experiment(config: Path, port: int, bind_host: str, wait: bool, timeout: float | None, keep: bool) -> int:
    from .launcher import create_experiment, experiment_summary, stop_experiment, wait_for_experiment

    handle = create_experiment(config, port=port, bind_host=bind_host)
    print(f"experiment {handle.id} started; dashboard: {handle.url}", flush=True)
    if bind_host == "127.0.0.1":
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
            print(f"timm folder: {summary['export_dir']}  (timm.create_model('local-dir:{summary['export_dir']}', pretrained=True))")
    line = {key: summary[key] for key in ("experiment", "status", "best", "export_dir", "dashboard")}
    line["trials"] = [{"id": t["id"], "status": t["status"]} for t in summary["trials"]]
    print(json.dumps(line))
    return 0 if summary["status"] in ("DONE", "NO_MORE_TRIAL") and summary["best"] is not None else 1


def _create(args: argparse.Namespace) -> int:
    return run_experiment(args.config, args.port, args.bind_host, args.wait, args.timeout, args.keep)


def _quickstart_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=8080)


def _quickstart(args: argparse.Namespace) -> int:
    return run_experiment(QUICKSTART_CONFIG, args.port, "127.0.0.1", wait=True, timeout=1800, keep=False)


def _export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--spec", type=Path, required=True, help="an ArchSpec JSON (arch.json of a trial)")
    parser.add_argument("--weights", type=Path, help="a resnas checkpoint or a .safetensors state dict")
    parser.add_argument("--out", type=Path, required=True, help="the timm folder to write")
    parser.add_argument("--input-size", type=int, nargs=3, metavar=("C", "H", "W"))
    parser.add_argument("--mean", type=float, nargs="+")
    parser.add_argument("--std", type=float, nargs="+")


def _export(args: argparse.Namespace) -> int:
    from search_spaces import ArchSpec, build_model, export_to_timm

    if not args.spec.is_file():
        raise UserError(f"{args.spec} does not exist; pass the arch.json a trial wrote.")
    spec = ArchSpec.from_json(args.spec.read_text())
    model = build_model(spec)
    if args.weights is not None:
        state_dict = _read_weights(args.weights)
        try:
            model.load_state_dict(state_dict, strict=True)
        except RuntimeError as error:
            first = str(error).splitlines()[1].strip() if "\n" in str(error) else str(error)
            raise UserError(
                f"{args.weights} does not match {args.spec} ({first}); pass the spec it was trained with."
            ) from None
    folder = export_to_timm(
        spec, model, args.out, mean=tuple(args.mean) if args.mean else None,
        std=tuple(args.std) if args.std else None, input_size=tuple(args.input_size) if args.input_size else None,
    )
    print(f"wrote {folder}; load it with timm.create_model('local-dir:{folder}', pretrained=True)")
    return 0


def _read_weights(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"{path} does not exist; pass a checkpoint written by resnas or a .safetensors file.")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as error:  # noqa: BLE001
            raise UserError(f"{path} is not a readable safetensors file ({error}).") from None
    from trainers.checkpoint import load_checkpoint

    return load_checkpoint(path)["state_dict"]


Command = tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int], str]
COMMANDS: dict[str, Command] = {
    "validate": (_validate_arguments, _validate, "check an nnictl YAML and its trial settings; launch nothing"),
    "create": (_create_arguments, _create, "launch an experiment (dashboard on 127.0.0.1)"),
    "quickstart": (_quickstart_arguments, _quickstart, "run nni_configs/quickstart.yml end to end"),
    "export": (_export_arguments, _export, "write a timm folder from an ArchSpec and weights"),
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
    from search_spaces import SpecError
    from trainers import CheckpointError, DataError

    from .experiment_config import ConfigError
    from .launcher import LaunchError

    try:
        return args.run(args)
    except (UserError, ConfigError, LaunchError, SpecError, CheckpointError, DataError) as error:
        print(f"resnas {args.command}: {error}", file=sys.stderr)
        return USER_ERROR


if __name__ == "__main__":
    sys.exit(main())

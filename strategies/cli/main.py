"""`resnas`: validate, create / resume (through nnictl, on 127.0.0.1, behind a token), stop, status, quickstart,
export, plot, space, latency-table.

Each subcommand is a Command(add_arguments, run, help) in COMMANDS; export, plot, space and latency-table live in
their own modules. Errors a user can cause print one line and exit 2 (errors.UserError and the known error types).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable, NamedTuple

from . import export, latency_table, plot, space
from .errors import USER_ERROR, UserError

QUICKSTART_CONFIG = Path(__file__).resolve().parents[2] / "nni_configs" / "quickstart.yml"


def port_number(text: str) -> int:
    """argparse type of --port: a TCP port; argparse names the argument and exits 2 (0 would ask nnictl for port 0)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number; use one from 1 to 65535") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port number; use one from 1 to 65535")
    return value


def _validate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", type=Path, help="an nnictl YAML, e.g. nni_configs/proxyless_scope_m.yml")
    parser.add_argument(
        "--no-gpu-check", action="store_true",
        help="skip checking that this machine has the GPUs the trials ask for (a config meant for another machine)",
    )
    parser.add_argument(
        "--no-data-check", action="store_true",
        help="skip checking that the dataset files the trials read are on this machine (a config meant for another "
             "machine, or data that is put in place later)",
    )


def _validate(args: argparse.Namespace) -> int:
    from ..launch.config import DataFilesError, GpuRequestError, load_experiment_config

    try:
        load_experiment_config(args.config, check_gpus=not args.no_gpu_check, check_data=not args.no_data_check)
    except GpuRequestError as error:
        raise GpuRequestError(f"{str(error).rstrip('.')} (or pass --no-gpu-check to check it for another machine).")
    except DataFilesError as error:
        raise DataFilesError(f"{str(error).rstrip('.')} (or pass --no-data-check to check it for another machine).")
    skipped = [name for name, skip in (("GPUs", args.no_gpu_check), ("data", args.no_data_check)) if skip]
    print(f"{args.config}: ok" + (f" ({' and '.join(skipped)} not checked)" if skipped else ""))
    return 0


def _create_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, required=True, help="an nnictl YAML under nni_configs/")
    _follow_arguments(parser)


def _follow_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=port_number, default=8080, help="dashboard port (a free one is used if taken)")
    parser.add_argument(
        "--bind-host", default="127.0.0.1",
        help="address the dashboard listens on; 0.0.0.0 exposes it to the network, guarded only by the token, "
             "which travels unencrypted (plain HTTP): prefer an ssh tunnel",
    )
    parser.add_argument(
        "--no-token", action="store_true",
        help="serve the dashboard and REST API without the token (only the Host check stays): every user and "
             "program that can reach the port can then run code through NNI's REST API",
    )
    parser.add_argument("--wait", action="store_true", help="block until the experiment ends, print a JSON line")
    parser.add_argument("--timeout", type=float, default=None, help="seconds to wait at most (with --wait)")
    parser.add_argument("--keep", action="store_true", help="leave the manager running after --wait")


def run_experiment(config: Path, port: int, bind_host: str, wait: bool, timeout: float | None, keep: bool,
                   use_token: bool = True) -> int:
    from ..launch import create_experiment

    handle = create_experiment(config, port=port, bind_host=bind_host, use_token=use_token)
    return follow_experiment(handle, wait, timeout, keep)


def _job_of(trial: dict) -> str | None:
    """The multi-trial job a trial ran ("step0/with_reg"), from the parameters NNI gave it, or None."""
    sent = trial.get("parameters")  # NNI's envelope: {"parameter_id": ..., "parameters": {...}}
    parameters = sent.get("parameters") if isinstance(sent, dict) else None
    return parameters.get("job") if isinstance(parameters, dict) else None


def follow_experiment(handle, wait: bool, timeout: float | None, keep: bool) -> int:
    """Print where the dashboard is; with `wait`, block until the search ends and print its JSON line."""
    from ..launch import experiment_summary, stop_experiment, wait_for_experiment
    from ..launch.live_status import LiveStatus
    from ..launch.rest import ExperimentFailed

    # The only place the token is printed: the JSON line and error messages carry the plain URL.
    print(f"experiment {handle.id} started; dashboard: {handle.dashboard_url}", flush=True)
    if handle.bind_host == "127.0.0.1":
        print(f"from another machine: ssh -L {handle.port}:127.0.0.1:{handle.port} <this host>, then open the "
              f"dashboard URL above")
    if not wait:
        print(f"follow it there or with `resnas status {handle.id}`; `resnas stop {handle.id}` ends it.")
        return 0
    # While waiting: one line redrawn in place on a terminal, a plain line per change in a log (live_status).
    live = LiveStatus(handle)
    try:
        try:
            status = wait_for_experiment(handle, timeout=timeout, on_poll=live)
        finally:
            live.close()  # before anything else is printed: the status line keeps its last state
        summary = experiment_summary(handle, status)
    except ExperimentFailed as failed:  # the watchdog: a manager in ERROR or a dead tuner, said in one line
        print(f"resnas: {' '.join(str(failed).split())}", file=sys.stderr)
        return 1
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
    for trial in summary["trials"]:
        if "error" in trial:  # why, here: otherwise only the trial's stderr in the experiment folder says it
            job = _job_of(trial)
            print(f"trial {trial['id']}{f' (job {job})' if job else ''} failed: {trial['error']}")
    line = {key: summary[key] for key in ("experiment", "status", "best", "export_dir", "dashboard")}
    line["trials"] = [{key: t[key] for key in ("id", "status", "error") if key in t} for t in summary["trials"]]
    print(json.dumps(line))
    return 0 if summary["status"] in ("DONE", "NO_MORE_TRIAL", "TUNER_NO_MORE_TRIAL") and summary["best"] else 1


def _create(args: argparse.Namespace) -> int:
    return run_experiment(args.config, args.port, args.bind_host, args.wait, args.timeout, args.keep,
                          use_token=not args.no_token)


def _resume_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("experiment", help="the experiment ID (as `resnas create` printed it)")
    parser.add_argument("--dir", type=Path, default=None,
                        help="the config's experimentWorkingDirectory (the folder holding ID/), if not the default")
    _follow_arguments(parser)


def _resume(args: argparse.Namespace) -> int:
    from ..launch import resume_experiment

    handle = resume_experiment(args.experiment, args.dir, port=args.port, bind_host=args.bind_host,
                               use_token=not args.no_token)
    return follow_experiment(handle, args.wait, args.timeout, args.keep)


def _experiment_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("experiment", help="the experiment ID (as `resnas create` printed it)")


def _stop(args: argparse.Namespace) -> int:
    from ..launch import registered_experiment, stop_experiment

    handle = registered_experiment(args.experiment)
    stop_experiment(handle)
    print(f"experiment {handle.id} stopped; `resnas resume {handle.id}` continues it.")
    return 0


def _status(args: argparse.Namespace) -> int:
    """The status line `--wait` shows (elapsed, trials, best, step), then one JSON line: the experiment's status
    and how many trials are in each state (the last line, for programs)."""
    import urllib.error
    from collections import Counter

    from ..launch import LaunchError, registered_experiment
    from ..launch.access_token import token_file
    from ..launch.live_status import current_status, experiment_started, status_line
    from ..launch.rest import experiment_status, trial_jobs

    handle = registered_experiment(args.experiment)
    try:
        status = experiment_status(handle)
        jobs = trial_jobs(handle)
        started = experiment_started(handle)
    except urllib.error.HTTPError as error:
        raise LaunchError(f"the NNI manager on port {handle.port} refused the request ({error.code}); if it is not "
                          f"experiment {handle.id}'s, see `nnictl experiment list`, else its token is not the one "
                          f"in {token_file(handle.folder)}.") from None
    except (urllib.error.URLError, OSError):
        raise LaunchError(f"experiment {handle.id} is not running (nothing answers on port {handle.port}); "
                          f"`resnas resume {handle.id}` continues it.") from None
    print(status_line(current_status(handle, status, jobs, started)))
    trials = Counter(trial.get("status") for trial in jobs)
    print(json.dumps({"experiment": handle.id, "status": status, "trials": dict(sorted(trials.items())),
                      "dashboard": handle.url}))
    return 0


def _quickstart_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=port_number, default=8080)


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
    "stop": Command(_experiment_argument, _stop, "stop a running experiment (what `nnictl stop ID` does)"),
    "status": Command(_experiment_argument, _status,
                      "print a running experiment's status line, then its trial counts as one JSON line"),
    "quickstart": Command(_quickstart_arguments, _quickstart, "run nni_configs/quickstart.yml end to end"),
    "export": Command(export.add_arguments, export.run, export.HELP),
    "plot": Command(plot.add_arguments, plot.run, plot.HELP),
    "space": Command(space.add_arguments, space.run, space.HELP),
    "latency-table": Command(latency_table.add_arguments, latency_table.run, latency_table.HELP),
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
    from search_spaces.errors import LatencyTableError
    from trainers import CheckpointError, DataError

    from ..launch import ConfigError, LaunchError
    from ..multi_trial.state import StateError
    from ..settings import SettingsError

    try:
        return args.run(args)
    except (UserError, ConfigError, LaunchError, StateError, SpecError, ExportError, CheckpointError,
            DataError, LatencyTableError, SettingsError) as error:
        message = " ".join(str(error).split())  # one line, whatever the exception text held
        print(f"resnas {args.command}: {message}", file=sys.stderr)
        return USER_ERROR

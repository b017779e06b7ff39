"""What every multi-trial job (hill climbing, layer pruning) does the same way inside its trial process.

The start net (a method's own, an ArchSpec file or a pretrained timm ResNet), training with per-epoch reports,
the job model (model.ckpt + arch.json, see job_files), cost facts, and the final test + timm export (the
ProxylessNAS trial tests and exports through the same two functions). Imported by trials only: it loads torch,
timm and Lightning.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import torch
from torch import nn

from search_spaces.builder import build_model
from search_spaces.cost import measure_cost
from search_spaces.export import export_to_timm
from search_spaces.model_card import ModelCard, NetworkOrigin, settings_digest
from search_spaces.pretrained_sources import SOURCE_FORMS, is_pretrained_source
from search_spaces.spec import ArchSpec
from search_spaces.timm_import import import_timm_resnet
from trainers import (
    ClassificationDataModule,
    DataError,
    DatasetInfo,
    FitResult,
    OptimConfig,
    dataset_info,
    evaluate,
    fit,
    load_checkpoint,
    save_checkpoint,
    training_device,
)
from trainers.atomic import atomic_write_text
from trainers.system import ExtraLoss
from trainers.tensorboard import run_folder

from ..data import DataSettings, export_normalization, input_size, make_job_datamodule
from ..reporting import Reporter
from ..settings import SettingsError, parse_settings
from .job_files import MODEL_FILE, SPEC_FILE, finished_result, write_result

logger = logging.getLogger(__name__)
Settings = TypeVar("Settings", bound=DataSettings)
JobBody = Callable[[Settings, ClassificationDataModule, Path], dict[str, Any]]


def run_job(parameters: dict[str, Any], output_dir: Path, reporter: Reporter, settings_class: type[Settings],
            body: JobBody) -> dict[str, Any]:
    """What every multi-trial job does around its own work.

    A job whose folder holds a result (re-issued after a resume) reports it and trains nothing. Otherwise the
    search's settings are parsed from the parameters, the seed set, the data module set up, and
    body(settings, datamodule, job folder) computes the result, which is written last (its presence means the
    job's files are complete) and reported as the trial's final metric.
    """
    out_dir = Path(parameters.get("out_dir") or output_dir)
    done = finished_result(out_dir)
    if done is not None:
        logger.info("%s finished before; reporting its result again", out_dir)
        reporter.final(done)
        return done
    settings = parse_settings(settings_class, parameters.get("settings"), "trial parameters")
    torch.manual_seed(settings.seed)
    result = body(settings, make_job_datamodule(settings), out_dir)
    write_result(out_dir, result)
    reporter.final(result)
    return result


@dataclasses.dataclass(frozen=True)
class StartNet:
    """A method's start net: its spec, and for a pretrained network its weights and where they came from."""

    spec: ArchSpec
    state_dict: dict[str, torch.Tensor] | None = None  # None: freshly initialised (build_model's init)
    origin: NetworkOrigin | None = None

    def build(self) -> nn.Module:
        return build_model(self.spec) if self.state_dict is None else build_with_weights(self.spec, self.state_dict)

    def facts(self) -> dict[str, Any]:
        """What the start job's result says of the start net's origin; the tuner hands it to the final job."""
        return {"start_origin": self.origin.to_dict()} if self.origin is not None else {}


def load_start_net(start: str, named: dict[str, Callable[[DatasetInfo], ArchSpec]], data: DataSettings) -> StartNet:
    """A method's start net: one of its `named` nets for the dataset, a pretrained timm ResNet (timm:NAME,
    local-dir:PATH, ...; its head and first conv fitted to the dataset), or an ArchSpec JSON file that fits it."""
    info = dataset_info(data.dataset, data.data_dir)
    if is_pretrained_source(start):
        imported = import_timm_resnet(start, num_classes=info.num_classes, in_channels=info.in_channels)
        return StartNet(imported.spec, imported.state_dict, imported.origin)
    if start in named:
        return StartNet(named[start](info))
    path = Path(start)
    if not path.is_file():
        raise SettingsError(f"start net {path} does not exist; give an ArchSpec JSON path, a pretrained network "
                            f"({SOURCE_FORMS}) or one of {', '.join(named)}.")
    spec = ArchSpec.from_json(path.read_text())
    if spec.head.num_classes != info.num_classes or spec.in_channels != info.in_channels:
        raise SettingsError(
            f"start net {path} takes {spec.in_channels} channels and {spec.head.num_classes} classes; "
            f"{data.dataset} has {info.in_channels} and {info.num_classes}: edit its head/in_channels."
        )
    return StartNet(spec)


def start_origin(parameters: dict[str, Any]) -> NetworkOrigin | None:
    """The start net's origin a final job's parameters carry (`start_origin`, from the start job's result)."""
    origin = parameters.get("start_origin")
    return NetworkOrigin.from_dict(origin) if origin else None


def trial_tensorboard_root() -> Path | None:
    """NNI_OUTPUT_DIR/tensorboard, the folder NNI's dashboard starts TensorBoard on, inside an NNI trial; else None.

    NNI 3.0's local training service runs a trial in EXP/environments/ENV/trials/ID (its NNI_OUTPUT_DIR), but the
    dashboard's TensorBoard reads EXP/trials/ID/output/tensorboard (nni_node training_service/v3/compat.js,
    getTrialOutputLocalPath, + extensions/nniTensorboardManager.js), a folder no trial writes: it is linked here.
    """
    output = os.environ.get("NNI_OUTPUT_DIR")
    if not output:
        return None
    output_dir = Path(output)
    root = output_dir / "tensorboard"
    root.mkdir(parents=True, exist_ok=True)
    if len(output_dir.parts) > 4 and output_dir.parts[-2] == "trials" and output_dir.parts[-4] == "environments":
        seen = output_dir.parents[3] / "trials" / output_dir.name / "output" / "tensorboard"
        try:
            seen.parent.mkdir(parents=True, exist_ok=True)
            if seen.is_dir() and not seen.is_symlink() and not any(seen.iterdir()):
                seen.rmdir()  # made empty by the manager: TensorBoard was asked for before this trial logged
            if not seen.exists() and not seen.is_symlink():
                seen.symlink_to(root, target_is_directory=True)
        except OSError as error:  # the event files are still written; only the dashboard's button misses them
            logger.warning("could not link %s to %s for the dashboard's TensorBoard: %s", seen, root, error)
    return root


def trial_tensorboard_dir(name: str) -> Path | None:
    """A new run folder under the trial's TensorBoard root (name, name-2, ...), or None outside an NNI trial."""
    root = trial_tensorboard_root()
    return run_folder(root, name) if root is not None else None


def train(
    model: nn.Module,
    datamodule: ClassificationDataModule,
    data: DataSettings,
    optim: OptimConfig,
    epochs: int,
    reporter: Reporter,
    *,
    extra_losses: Sequence[ExtraLoss] = (),
    report_extra: dict[str, Any] | None = None,
) -> FitResult:
    """fit() with every epoch's validation accuracy reported as `default` (the dashboard's curve), and inside an
    NNI trial the epochs' scalars in TensorBoard (NNI_OUTPUT_DIR/tensorboard/train, train-2 for a second training)."""

    def on_epoch_end(epoch: int, metrics: dict[str, float]) -> None:
        reporter.intermediate({"default": metrics.get("val_accuracy", float("nan")), "epoch": epoch,
                               **{k: v for k, v in metrics.items() if k != "epoch"}, **(report_extra or {})})

    return fit(
        model,
        datamodule,
        optim,
        epochs,
        extra_losses=extra_losses,
        on_epoch_end=on_epoch_end,
        seed=data.seed,
        limit_train_batches=data.limit_train_batches,
        limit_val_batches=data.limit_val_batches,
        precision=data.precision,
        channels_last=data.channels_last,
        tensorboard_dir=trial_tensorboard_dir("train"),
    )


# ---- the job model ----------------------------------------------------------------------------------------------
def save_job_model(out_dir: Path, model: nn.Module, spec: ArchSpec, extra: dict[str, Any] | None = None) -> Path:
    """model.ckpt with the spec inside, and arch.json beside it for tuners (which read JSON, not torch)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out_dir / MODEL_FILE, model.cpu(), arch_spec=spec, extra=extra)
    atomic_write_text(out_dir / SPEC_FILE, spec.to_json())
    return out_dir / MODEL_FILE


def load_job_model(checkpoint: str | Path) -> tuple[ArchSpec, dict[str, torch.Tensor]]:
    """The spec and weights of an earlier job's checkpoint (weights_only, no code unpickled)."""
    payload = load_checkpoint(Path(checkpoint))
    if payload.get("arch_spec") is None:
        raise SettingsError(f"{checkpoint} carries no ArchSpec; write it with save_job_model.")
    return ArchSpec.from_json(payload["arch_spec"]), payload["state_dict"]


def build_with_weights(spec: ArchSpec, state_dict: dict[str, torch.Tensor]) -> nn.Module:
    model = build_model(spec)
    model.load_state_dict(state_dict, strict=True)
    return model


def cost_facts(spec: ArchSpec, data: DataSettings) -> dict[str, Any]:
    """params, FLOPs and MACs; with a latency_table setting also `latency_ms` predicted from it (parts it lacks are
    measured into it first when this machine is the table's device, else estimated and counted)."""
    cost = measure_cost(spec, input_size=input_size(data))
    return {"params": cost.params, "flops": cost.flops, "macs": cost.macs, **_predicted_latency(spec, data)}


def _predicted_latency(spec: ArchSpec, data: DataSettings) -> dict[str, Any]:
    table = getattr(data, "latency_table", None)
    if table is None:
        return {}
    from search_spaces.latency import predicted_latency

    return predicted_latency(spec, table, input_size(data))


def export_latency(spec: ArchSpec, data: DataSettings) -> dict[str, Any]:
    """An exported network's latency facts: predicted from the table, measured end to end where this machine is the
    table's device (cheap next to training), and the device they hold for; {} without a latency_table."""
    table_path = getattr(data, "latency_table", None)
    if table_path is None:
        return {}
    from search_spaces.latency import measured_latency
    from search_spaces.latency_table import LatencyTable

    size = input_size(data)
    measured = measured_latency(spec, table_path, size)
    facts = {**_predicted_latency(spec, data),
             "latency_device": f"{LatencyTable.load(table_path).device.describe()}, input {size[0]}x{size[1]}x{size[2]}"}
    if measured is not None:
        facts["measured_latency_ms"] = round(measured, 4)
    return facts


def data_card(data: DataSettings, card: ModelCard | None = None, **facts: Any) -> ModelCard:
    """`card` (what the caller knows: the method, notes) with what the settings tell: the data, the class names,
    the seed, the settings digest and, unless given, the method's own settings; `facts` set further fields."""
    settings = data.to_dict()
    own = {f.name for f in dataclasses.fields(data)} - {f.name for f in dataclasses.fields(DataSettings)}
    card = card or ModelCard()
    try:
        label_names = dataset_info(data.dataset, data.data_dir).class_names or None
    except DataError:  # an image folder that is not on this machine: the export goes on without names
        label_names = None
    return dataclasses.replace(
        card,
        dataset=data.dataset,
        label_names=label_names,
        seed=data.seed,
        settings_sha256=settings_digest(settings),
        # The method's own settings and the input the network saw; the rest is in the digest.
        method_settings=card.method_settings or {
            **{name: settings[name] for name in ("image_size", "augment", "batch_size")},
            **{name: value for name, value in settings.items() if name in own},
        },
        **facts,
    )


def test_and_export(model: nn.Module, spec: ArchSpec, datamodule: ClassificationDataModule, data: DataSettings,
                    out_dir: Path, card: ModelCard | None = None, export_dir: Path | None = None) -> dict[str, Any]:
    """Test-split accuracy and the timm folder (out_dir/timm_export unless export_dir) of the final network,
    its README card filled from `card` (the method), the settings (data_card) and the test result."""
    model.to(training_device())
    test = evaluate(model, datamodule, split="test")
    latency = export_latency(spec, data)
    card_latency = {name: latency.get(name) for name in ("latency_ms", "measured_latency_ms", "latency_device")}
    card = data_card(data, card, test_accuracy=test["accuracy"], test_split=datamodule.test_source, **card_latency)
    export_dir = export_to_timm(spec, model.cpu(), export_dir or out_dir / "timm_export",
                                **export_normalization(data), input_size=input_size(data), card=card)
    return {"test_accuracy": test["accuracy"], "test_split": datamodule.test_source, "export_dir": str(export_dir),
            **latency}

"""Weight transfer's donor: the trained deeper net every candidate takes its first n_i blocks per stage from.

Torch-free: the tuner reads the donor's depths (a stage cannot grow past them) from its ArchSpec JSON; the
trial loads the weights.

Two kinds of donor:
- a resnas CIFAR ResNet of the search's widths (an export folder, `local-dir:` of one, or a job's model.ckpt):
  the searched family is He et al.'s CIFAR ResNet (cifar_resnet_spec);
- a pretrained timm ResNet (timm:resnet18, timm:NAME@FILE, or a local-dir: folder save_for_hf wrote from one):
  the searched family is the donor's own network (its stem, block kind, widths and stage count) with stage i
  cut to its first n_i blocks, so every candidate is a prefix of the donor, as with a CIFAR donor. Its layout is
  read from the timm name (or the folder's config.json) without torch: resnet18/34/50/101/152, the plain
  torchvision layout resnas's resnet_spec builds; the trial imports the weights and checks they are that.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, TypeVar

from search_spaces.errors import PretrainedError
from search_spaces.pretrained_sources import is_pretrained_source, parse_pretrained_source, source_architecture
from search_spaces.spec import RESNET_LAYOUTS, ArchSpec, SpecError, StageSpec, cifar_resnet_spec, resnet_spec

from ..multi_trial.job_files import MODEL_FILE, SPEC_FILE as JOB_SPEC_FILE
from ..settings import SettingsError

Weights = TypeVar("Weights")
# What search_spaces.export writes into an export folder (that module loads torch and timm; this one must not).
EXPORT_SPEC_FILE, EXPORT_WEIGHTS_FILE = "arch_spec.json", "model.safetensors"
TIMM_DONORS: dict[str, int] = {f"resnet{depth}": depth for depth in RESNET_LAYOUTS}  # timm name -> resnet_spec depth


def is_timm_donor(donor: str | Path | None) -> bool:
    """Whether the donor is a pretrained timm network rather than a resnas CIFAR ResNet (a resnas export folder
    given as local-dir: is the latter)."""
    if donor is None or not is_pretrained_source(donor):
        return False
    try:
        source = parse_pretrained_source(str(donor))
    except PretrainedError:
        return False  # donor_path names the syntax error
    return not (source.kind == "local-dir" and (Path(source.name).expanduser() / EXPORT_SPEC_FILE).is_file())


def timm_donor_spec(donor: str, num_classes: int, in_channels: int) -> ArchSpec:
    """A timm donor's network, fitted to the data's classes and channels, read from its name without torch."""
    try:
        source = parse_pretrained_source(donor)
    except PretrainedError as error:
        raise SettingsError(f"donor {error}") from None
    if source.kind == "hf-hub":
        raise SettingsError(f"donor {donor}: the stage-wise search reads a timm donor's layout without downloading "
                            f"it; give timm:NAME, or save it with save_for_hf and give local-dir:FOLDER.")
    architecture = source_architecture(donor)
    if architecture is None:
        raise SettingsError(f"donor {donor}: {source.name} is not a timm model folder (no config.json naming its "
                            f"architecture); write one with timm.models.save_for_hf(model, FOLDER).")
    if architecture not in TIMM_DONORS:
        raise SettingsError(f"donor {donor} is a timm {architecture}, and the stage-wise search grows the plain "
                            f"torchvision-layout ResNets only; give one of {', '.join(TIMM_DONORS)}.")
    return resnet_spec(TIMM_DONORS[architecture], num_classes=num_classes, in_channels=in_channels)


def prefix_spec(donor: ArchSpec, depths: tuple[int, ...]) -> ArchSpec:
    """The donor with stage i cut to its first depths[i] blocks: the first block keeps the stride and projection,
    so every prefix is a valid network whose state dict keys are a subset of the donor's."""
    if len(depths) != len(donor.stages) or any(not 1 <= depth <= len(stage.blocks)
                                               for depth, stage in zip(depths, donor.stages)):
        raise SettingsError(f"depths {list(depths)} do not fit the donor's {list(donor.depths)}: give one depth of "
                            f"1 to the donor's per stage.")
    stages = tuple(StageSpec(blocks=stage.blocks[:depth], pool=stage.pool) for stage, depth in zip(donor.stages, depths))
    return ArchSpec(stem=donor.stem, stages=stages, head=donor.head, in_channels=donor.in_channels)


def donor_path(donor: str | Path) -> Path:
    """The donor's path: `local-dir:FOLDER` of a resnas export is FOLDER; a timm donor has none (its weights are
    imported, timm_donor_spec)."""
    if not is_pretrained_source(donor):
        return Path(donor)
    try:
        source = parse_pretrained_source(str(donor))
    except PretrainedError as error:
        raise SettingsError(f"donor {error}") from None
    folder = Path(source.name).expanduser()
    if source.kind == "local-dir" and not folder.is_dir():
        raise SettingsError(f"donor {donor} does not exist; give a resnas timm export folder or a job's model.ckpt, "
                            f"or set train_donor: true.")
    if source.kind == "local-dir" and (folder / EXPORT_SPEC_FILE).is_file():
        return folder
    raise SettingsError(f"donor {donor} is a timm network, which has no resnas files; read it with "
                        f"timm_donor_spec (the trial imports its weights).")


def donor_files(donor: str | Path) -> tuple[Path, Path]:
    """(ArchSpec JSON, weights) of a donor: a resnas timm export folder, or a job's model.ckpt + arch.json."""
    path = donor_path(donor)
    if path.is_dir():
        spec_file, weights = path / EXPORT_SPEC_FILE, path / EXPORT_WEIGHTS_FILE
        if not weights.is_file() and (path / MODEL_FILE).is_file():  # a job folder
            spec_file, weights = path / JOB_SPEC_FILE, path / MODEL_FILE
    else:
        spec_file, weights = path.parent / JOB_SPEC_FILE, path
    if not spec_file.is_file() or not weights.is_file():
        raise SettingsError(f"donor {donor} has no {spec_file.name} and weights beside it; give a resnas timm "
                            f"export folder or a job's model.ckpt with its arch.json.")
    return spec_file, weights


def donor_spec(donor: str | Path, widths: tuple[int, ...]) -> ArchSpec:
    """The donor's ArchSpec, refused unless it is a CIFAR ResNet of the search's widths."""
    spec_file, _ = donor_files(donor)
    try:
        spec = ArchSpec.from_json(spec_file.read_text())
        expected = cifar_resnet_spec(spec.depths, widths, spec.head.num_classes, spec.in_channels)
    except SpecError as error:
        raise SettingsError(f"donor {donor}: {error}") from None
    if spec != expected:
        raise SettingsError(f"donor {donor} is not a CIFAR ResNet of widths {list(widths)}; give a donor of the "
                            f"search's widths (or set train_donor: true).")
    return spec


def transferred_weights(donor_weights: Mapping[str, Weights], candidate_keys: list[str]) -> dict[str, Weights]:
    """The candidate's state dict from the donor's. A candidate whose stages are no deeper than the donor's has
    exactly the donor's keys for its stem, its blocks layer{i}.{j} with j < n_i and its head (the first block of
    each stage holds the stride and projection in both), so the transfer is a selection by key."""
    missing = [key for key in candidate_keys if key not in donor_weights]
    if missing:
        raise SettingsError(f"the donor has no weights for {missing[0]}: a candidate stage is deeper than the "
                            f"donor's; use a deeper donor.")
    return {key: donor_weights[key] for key in candidate_keys}

"""Weight transfer's donor: the trained deeper net every candidate takes its first n_i blocks per stage from.

Torch-free: the tuner reads the donor's depths (a stage cannot grow past them) from its ArchSpec JSON; the
trial loads the weights.

A pretrained timm ResNet (timm:NAME, hf-hub:ID, a local-dir: folder timm wrote) is refused: the search space is
He et al.'s CIFAR ResNet (3x3/1 stem, no max pool, basic blocks of the search's widths) and the transfer copies
the donor's stem and first blocks by name, but every timm ResNet has a 7x7/2 (or deep) stem with a max pool, so
no timm ResNet is a donor of any widths. `local-dir:` of a resnas export folder is that folder (its ArchSpec
decides, as for a plain path). hill_climbing and layer_pruning start from timm ResNets (`start: timm:NAME`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, TypeVar

from search_spaces.errors import PretrainedError
from search_spaces.pretrained_sources import is_pretrained_source, parse_pretrained_source
from search_spaces.spec import ArchSpec, SpecError, cifar_resnet_spec

from ..multi_trial.job_files import MODEL_FILE, SPEC_FILE as JOB_SPEC_FILE
from ..settings import SettingsError

Weights = TypeVar("Weights")
# What search_spaces.export writes into an export folder (that module loads torch and timm; this one must not).
EXPORT_SPEC_FILE, EXPORT_WEIGHTS_FILE = "arch_spec.json", "model.safetensors"


def donor_path(donor: str | Path) -> Path:
    """The donor's path: `local-dir:FOLDER` of a resnas export is FOLDER; other pretrained sources are refused."""
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
    raise SettingsError(f"donor {donor} is a timm network, and no timm ResNet has the 3x3/1 stem without max pool of "
                        f"the CIFAR ResNets the stage-wise search transfers weights into: give a resnas CIFAR-ResNet "
                        f"donor or set train_donor: true (to start from {donor}, use hill_climbing or layer_pruning "
                        f"with start: {donor}).")


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

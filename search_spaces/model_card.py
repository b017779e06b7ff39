"""What an export folder says about itself: the README.md model card and the provenance record.

    README.md     a Hugging Face Hub model card as timm's own models carry (YAML front matter with
                  `library_name: timm`, then what the model is, its cost, test accuracy, data, method,
                  architecture and how to load it). Upload the folder as it is (huggingface_hub's
                  upload_folder): timm's push_to_hf_hub saves the model anew and writes a generic card.
    resnas.json   `provenance`: resnas version and git commit, the sha256 of the settings the run used,
                  seed, Python/torch/timm/NNI/Lightning versions, the pretrained network the search started
                  from (if any); `card`: the ModelCard facts as JSON.

The facts come from the caller in one ModelCard record; everything else (cost, data config) from the export.
No NNI or Lightning import: their versions are read from package metadata.
"""

from __future__ import annotations

import functools
import hashlib
import json
import platform
import subprocess
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping

from .spec import ArchSpec

REPO_ROOT = Path(__file__).resolve().parents[1]
LABELS_SHOWN = 20  # a card lists this many class names; config.json's label_names holds them all


@dataclass(frozen=True)
class NetworkOrigin:
    """Where a pretrained start network came from (search_spaces.timm_import), for the card and resnas.json."""

    source: str  # the setting as given: timm:resnet50.a1_in1k, local-dir:PATH, hf-hub:ID, timm:NAME@FILE
    architecture: str  # timm's architecture name, e.g. resnet50
    pretrained_tag: str | None = None  # timm's weight tag (a1_in1k, tv_in1k, ...) when the source names one
    hf_hub_id: str | None = None  # the Hub repository the weights came from, when they did
    weights_sha256: str | None = None  # of the weights file read, when there was one on this machine to hash
    changes: tuple[str, ...] = ()  # what the import changed: a new head, a new first conv

    def describe(self) -> str:
        """One line: timm resnet50 (a1_in1k) from `timm:resnet50.a1_in1k`, Hub timm/resnet50.a1_in1k, weights
        sha256 ..., fc re-initialised for 10 classes (was 1000)."""
        named = f"timm {self.architecture}" + (f" ({self.pretrained_tag})" if self.pretrained_tag else "")
        parts = [f"{named} from `{self.source}`"]
        if self.hf_hub_id:
            parts.append(f"Hub {self.hf_hub_id}")
        if self.weights_sha256:
            parts.append(f"weights sha256 {self.weights_sha256}")
        return ", ".join(parts + list(self.changes))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "changes": list(self.changes)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "NetworkOrigin":
        return cls(**{**data, "changes": tuple(data.get("changes", ()))})


@dataclass(frozen=True)
class ModelCard:
    """The facts an export cannot read off its weights. Every field is optional: the card says what is known."""

    method: str | None = None  # the resnas method (strategies.methods): proxyless, hill_climbing, ...
    method_description: str | None = None  # one line: the paper's method and what it searched
    method_settings: Mapping[str, Any] = field(default_factory=dict)  # the run's key settings, shown in the card
    dataset: str | None = None
    label_names: tuple[str, ...] | None = None  # class index -> name, also pretrained_cfg's label_names
    test_accuracy: float | None = None
    test_split: str | None = None  # where the test accuracy comes from (never the split that selected the net)
    seed: int | None = None
    settings_sha256: str | None = None  # settings_digest() of the settings the run used
    notes: tuple[str, ...] = ()  # further lines: a top-k rank, weights that were not retrained, ...
    start_origin: NetworkOrigin | None = None  # the pretrained network the search started from, if any
    # With a latency table (search_spaces/latency_table.py): predicted from it, measured end to end on its device
    # when the export ran there, and that device's settings in one line (latency holds only for them).
    latency_ms: float | None = None
    measured_latency_ms: float | None = None
    latency_device: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["method_settings"] = dict(self.method_settings)
        data["label_names"] = list(self.label_names) if self.label_names is not None else None
        data["notes"] = list(self.notes)
        data["start_origin"] = self.start_origin.to_dict() if self.start_origin is not None else None
        return data


def settings_digest(settings: Mapping[str, Any]) -> str:
    """sha256 of the settings as canonical JSON (sorted keys): equal settings give equal digests anywhere."""
    text = json.dumps(dict(settings), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def provenance(card: ModelCard) -> dict[str, Any]:
    """Where the export came from: code version, settings digest, seed and library versions."""
    import timm
    import torch

    commit, dirty = git_commit()
    return {
        "resnas_version": _version("resnas"),
        "git_commit": commit,  # None when resnas does not run from a git checkout
        "git_dirty": dirty,  # uncommitted changes to tracked files: the commit alone does not reproduce it
        "settings_sha256": card.settings_sha256,
        "seed": card.seed,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "nni": _version("nni"),  # from metadata: importing NNI would take seconds and is never needed here
        "pytorch_lightning": _version("pytorch-lightning"),
        # The pretrained weights the search started from: its result is only reproducible from the same ones.
        "start_network": card.start_origin.to_dict() if card.start_origin is not None else None,
    }


@functools.lru_cache(maxsize=1)
def git_commit() -> tuple[str | None, bool | None]:
    """(HEAD commit, dirty) of the checkout resnas runs from; (None, None) when it is not one or git is absent."""
    try:
        top = _git("rev-parse", "--show-toplevel")
        if Path(top).resolve() != REPO_ROOT:  # an installed resnas inside some other repository
            return None, None
        return _git("rev-parse", "HEAD"), bool(_git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None, None


def _git(*arguments: str) -> str:
    done = subprocess.run(["git", "-C", str(REPO_ROOT), *arguments], capture_output=True, text=True, timeout=10,
                          check=True)
    return done.stdout.strip()


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def describe_architecture(spec: ArchSpec) -> list[str]:
    """The architecture in a few lines: stem, one line per stage (kernel/activation per block when mixed), head."""
    stem = spec.stem
    pool = " + 3x3/2 max-pool" if stem.max_pool else ""
    lines = [f"stem: {stem.kernel_size}x{stem.kernel_size}/{stem.stride} conv, {stem.out_channels} channels, "
             f"{stem.activation}{pool}"]
    for index, stage in enumerate(spec.stages, start=1):
        pooled = "2x2/2 pool, then " if stage.pool != "none" else ""
        if not stage.blocks:
            lines.append(f"layer{index}: {pooled}no blocks")
            continue
        kinds = sorted({block.kind for block in stage.blocks})
        stride = max(block.stride for block in stage.blocks)
        picks = [f"k{block.kernel_size} {block.activation}" for block in stage.blocks]
        each = f"all {picks[0]}" if len(set(picks)) == 1 else ", ".join(picks)
        lines.append(f"layer{index}: {pooled}{len(stage.blocks)} x {'/'.join(kinds)}, "
                     f"{stage.blocks[-1].out_channels} channels out, stride {stride}: {each}")
    dropout = f"dropout {spec.head.dropout}, " if spec.head.dropout else ""
    lines.append(f"head: global average pool, {dropout}fc {spec.num_features} -> {spec.head.num_classes}")
    return lines


def render_card(folder: Path, spec: ArchSpec, config: dict[str, Any], card: ModelCard, params: int, macs: int,
                origin: Mapping[str, Any]) -> str:
    """README.md for an export folder: front matter (tags, no license) and the body."""
    architecture = config["architecture"]
    pretrained = config["pretrained_cfg"]
    size = pretrained["input_size"]
    tags = ["image-classification", "timm", "resnas", *([card.method] if card.method else [])]
    front = ["---", "library_name: timm", "pipeline_tag: image-classification", "tags:",
             *[f"- {json.dumps(tag)}" for tag in tags],
             "# license: choose one before publishing (the weights' and the training data's terms decide it)",
             "---"]
    found = f"found by resnas's {card.method} method" if card.method else "built by resnas"
    trained = f", trained on {card.dataset}" if card.dataset else ""
    body = [f"# Model card for {folder.name}", "",
            f"A ResNet-family image classifier {found}{trained} at {size[1]} x {size[2]} pixels, exported as a timm "
            f"model ({architecture}).", "",
            "## Model details", "",
            f"- **Params (M):** {params / 1e6:.3f}",
            f"- **GMACs:** {macs / 1e9:.3f} at {size[0]} x {size[1]} x {size[2]}",
            *([f"- **Latency:** {_latency(card)}"] if card.latency_ms is not None else []),
            f"- **Test accuracy:** {_accuracy(card)}",
            f"- **Dataset:** {card.dataset or 'not recorded'}",
            f"- **Input:** {size[0]} x {size[1]} x {size[2]}, mean {_numbers(pretrained['mean'])}, "
            f"std {_numbers(pretrained['std'])}, {pretrained['interpolation']} resize, "
            f"crop_pct {pretrained['crop_pct']}",
            f"- **Classes ({spec.head.num_classes}):** {_labels(card.label_names)}",
            f"- **Method:** {card.method_description or card.method or 'not recorded'}"]
    if card.method_settings:
        body.append("- **Settings:** " + ", ".join(f"{k}={_setting(v)}" for k, v in card.method_settings.items()))
    body += [f"- **Seed:** {card.seed if card.seed is not None else 'not recorded'}",
             f"- **Provenance:** resnas {origin.get('resnas_version')}, commit {origin.get('git_commit') or 'unknown'}"
             f"{' (with uncommitted changes)' if origin.get('git_dirty') else ''}, settings sha256 "
             f"{card.settings_sha256 or 'not recorded'} (resnas.json has the full record)"]
    if card.start_origin is not None:
        body.append(f"- **Started from:** {card.start_origin.describe()}")
    body += [f"- {note}" for note in card.notes]
    body += ["", "## Architecture", "", "```", *describe_architecture(spec), "```", "",
             "`arch_spec.json` holds the full ArchSpec: `search_spaces.build_model` rebuilds the network from it.",
             "", "## How to load it", "", "```python", "import timm", "import timm.data", "import torch"]
    if architecture == "resnas_net":
        body.append("import search_spaces.timm_entry  # registers timm's resnas_net entry point (torch + timm only)")
    body += ["", f"model = timm.create_model('local-dir:{folder}', pretrained=True).eval()",
             "config = timm.data.resolve_model_data_config(model)",
             "transform = timm.data.create_transform(**config, is_training=False)",
             "with torch.no_grad():",
             "    probabilities = model(transform(image).unsqueeze(0)).softmax(-1)  # image: a PIL image",
             "labels = model.pretrained_cfg.get('label_names')", "```", ""]
    if architecture != "resnas_net":
        body += ["Plain timm builds this architecture: the resnas code is not needed to load it.", ""]
    return "\n".join(front + body)


def _latency(card: ModelCard) -> str:
    measured = f", measured {card.measured_latency_ms:.4g} ms" if card.measured_latency_ms is not None else ""
    return f"{card.latency_ms:.4g} ms predicted{measured} on {card.latency_device or 'an unrecorded device'}"


def _accuracy(card: ModelCard) -> str:
    if card.test_accuracy is None:
        return "not measured"
    split = f" on {card.test_split}" if card.test_split else ""
    return f"{100 * card.test_accuracy:.2f}%{split}"


def _labels(names: tuple[str, ...] | None) -> str:
    if not names:
        return "names not recorded"
    shown = ", ".join(names[:LABELS_SHOWN])
    return shown + (f", ... ({len(names) - LABELS_SHOWN} more in config.json)" if len(names) > LABELS_SHOWN else "")


def _numbers(values: list[float]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def _setting(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (list, tuple, dict, str)) else str(value)


__all__ = ["ModelCard", "NetworkOrigin", "describe_architecture", "git_commit", "provenance", "render_card",
           "settings_digest"]

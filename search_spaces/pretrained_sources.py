"""Where a pretrained start network comes from: the one setting string, parsed and checked without torch.

    timm:NAME            timm.create_model(NAME, pretrained=True): timm's weights (NAME may carry a tag,
                         resnet50.a1_in1k), downloaded or found in the Hugging Face cache
    timm:NAME@FILE       NAME's architecture with the weights in FILE (.safetensors, or a torch checkpoint)
    local-dir:PATH       a folder timm.models.save_for_hf (or a resnas export) wrote, as timm loads it
    hf-hub:ORG/NAME      a Hub repository, as timm loads it

Tuners and the config validator read these (NNI's dispatcher must connect within 10 s: no torch here); the
trial imports the network (search_spaces.timm_import).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .errors import PretrainedError

SourceKind = Literal["timm", "local-dir", "hf-hub"]
SOURCE_KINDS: tuple[str, ...] = ("timm", "local-dir", "hf-hub")
SOURCE_FORMS = "timm:NAME, timm:NAME@FILE, local-dir:PATH or hf-hub:ID"


@dataclass(frozen=True)
class PretrainedSource:
    kind: SourceKind
    name: str  # the timm model name (timm), the folder (local-dir) or the repository id (hf-hub)
    weights_file: str | None = None  # timm:NAME@FILE only

    @property
    def timm_name(self) -> str:
        """What timm.create_model is given: NAME for timm:, the prefixed string for the others."""
        return self.name if self.kind == "timm" else f"{self.kind}:{self.name}"


def is_pretrained_source(text: object) -> bool:
    """Whether a setting names a pretrained network (rather than a method's named net or an ArchSpec file)."""
    return isinstance(text, str) and any(text.startswith(f"{kind}:") for kind in SOURCE_KINDS)


def parse_pretrained_source(text: str) -> PretrainedSource:
    kind, _, rest = text.partition(":")
    if kind not in SOURCE_KINDS or not rest.strip():
        raise PretrainedError(f"{text!r} names no pretrained network; write {SOURCE_FORMS}.")
    if kind == "timm" and "@" in rest:
        name, _, weights_file = rest.partition("@")
        if not name or not weights_file:
            raise PretrainedError(f"{text!r} needs both an architecture and a file; write timm:NAME@FILE, e.g. "
                                  f"timm:resnet50@weights/resnet50.safetensors.")
        return PretrainedSource("timm", name, weights_file)
    return PretrainedSource(kind, rest)  # type: ignore[arg-type]  # kind is one of SOURCE_KINDS


def source_problem(text: str) -> str | None:
    """Why a pretrained source cannot be read from this machine (one sentence), or None; checks only what needs
    no torch and no network: the syntax, and that a named folder or file exists."""
    try:
        source = parse_pretrained_source(text)
    except PretrainedError as error:
        return str(error)
    if source.kind == "local-dir":
        folder = Path(source.name).expanduser()
        if not (folder / "config.json").is_file():
            return (f"{text}: {folder} is not a timm model folder (no config.json); write one with "
                    f"timm.models.save_for_hf(model, FOLDER).")
    if source.weights_file is not None and not Path(source.weights_file).expanduser().is_file():
        return (f"{text}: the weights file {source.weights_file} does not exist; give the path of a .safetensors or "
                f".pth file.")
    return None


def source_architecture(text: str) -> str | None:
    """The timm architecture a source names, without torch or network: NAME's for timm:NAME[.TAG][@FILE], the one
    a local-dir: folder's config.json (save_for_hf's) names; None where that cannot be read here (hf-hub:, a
    folder without one). Tags are dropped: resnet50.a1_in1k -> resnet50."""
    source = parse_pretrained_source(text)
    if source.kind == "timm":
        return source.name.partition(".")[0]
    if source.kind == "local-dir":
        import json

        try:
            config = json.loads((Path(source.name).expanduser() / "config.json").read_text())
            return str(config["architecture"]).partition(".")[0]
        except (OSError, ValueError, KeyError, TypeError):
            return None
    return None


__all__ = ["PretrainedSource", "SOURCE_FORMS", "is_pretrained_source", "parse_pretrained_source",
           "source_architecture", "source_problem"]

"""An export folder is a model a user can ship: a Hub model card whose front matter timm's Hub tooling reads,
class names in pretrained_cfg, and a provenance record (code, settings digest, seed, library versions)."""

import json
import re
import sys
from dataclasses import dataclass, replace
from importlib import metadata

import pytest
import timm
import torch
import yaml

from search_spaces import ExportError, build_model, export_to_timm, measure_cost, resnet_spec
from search_spaces import model_card
from search_spaces.model_card import ModelCard, describe_architecture, settings_digest
from strategies.data import DataSettings
from strategies.multi_trial.job_trial import data_card
from trainers.datasets import dataset_info

SIZE = (3, 32, 32)
CIFAR10 = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def searched_spec():
    spec = resnet_spec(50, num_classes=10, stem="cifar", width_multiplier=0.125)
    return spec.replace_block(3, 1, replace(spec.stages[2].blocks[1], kernel_size=5, activation="mish"))


def full_card(**overrides):
    card = ModelCard(method="proxyless", method_description="ProxylessNAS over ResNet-50 search scope m",
                     method_settings={"scope": "m", "search_epochs": 300}, dataset="cifar10", label_names=CIFAR10,
                     test_accuracy=0.9312, test_split="test", seed=3, settings_sha256="0" * 64,
                     notes=("Rank 1 (the argmax) of 5.",))
    return replace(card, **overrides)


def front_matter(readme: str) -> dict:
    assert readme.startswith("---\n")
    return yaml.safe_load(readme.split("---\n")[1])


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """One export the read-only tests share (building and exporting it is most of their time)."""
    spec = searched_spec()
    model = build_model(spec).eval()
    folder = export_to_timm(spec, model, tmp_path_factory.mktemp("card") / "export", input_size=SIZE, card=full_card())
    return spec, model, folder


def test_the_card_front_matter_is_yaml_with_library_name_timm_and_no_license_chosen(exported):
    _, _, folder = exported
    meta = front_matter((folder / "README.md").read_text())
    assert meta["library_name"] == "timm" and meta["pipeline_tag"] == "image-classification"
    assert meta["tags"] == ["image-classification", "timm", "resnas", "proxyless"]
    assert "license" not in meta  # left to the user: a commented placeholder
    assert "# license:" in (folder / "README.md").read_text().split("---\n")[1]


def test_the_card_body_states_cost_accuracy_data_method_architecture_and_loading(exported):
    spec, _, folder = exported
    readme = (folder / "README.md").read_text()
    cost = measure_cost(spec, input_size=SIZE)
    assert f"**Params (M):** {cost.params / 1e6:.3f}" in readme
    assert f"**GMACs:** {cost.macs / 1e9:.3f} at 3 x 32 x 32" in readme
    assert "**Test accuracy:** 93.12% on test" in readme and "**Dataset:** cifar10" in readme
    assert "mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225)" in readme
    assert "airplane, automobile" in readme and "ProxylessNAS over ResNet-50 search scope m" in readme
    assert 'scope="m", search_epochs=300' in readme and "**Seed:** 3" in readme and "Rank 1 (the argmax)" in readme
    assert "layer3: 6 x bottleneck, 128 channels out, stride 2: k3 relu, k5 mish, k3 relu" in readme
    assert "import search_spaces.timm_entry" in readme and f"local-dir:{folder}" in readme


def test_the_cards_loading_code_runs_as_written(exported):
    from PIL import Image

    _, model, folder = exported
    code = re.search(r"```python\n(.*?)```", (folder / "README.md").read_text(), re.S).group(1)
    scope = {"image": Image.new("RGB", (40, 40), (120, 30, 200))}
    exec(code, scope)  # noqa: S102 - the card's own snippet, as a user would paste it
    assert scope["probabilities"].shape == (1, 10) and scope["labels"] == list(CIFAR10)
    assert torch.allclose(scope["probabilities"].sum(), torch.tensor(1.0))


def test_a_plain_resnet_card_needs_no_resnas_import(tmp_path):
    spec = resnet_spec(18, num_classes=10, stage_depths=(1, 1, 1, 1))
    folder = export_to_timm(spec, build_model(spec), tmp_path / "plain", input_size=SIZE)
    readme = (folder / "README.md").read_text()
    assert "import search_spaces" not in readme and "Plain timm builds this architecture" in readme
    assert front_matter(readme)["tags"] == ["image-classification", "timm", "resnas"]  # no method known
    assert "**Test accuracy:** not measured" in readme and "names not recorded" in readme
    assert "label_names" not in json.loads((folder / "config.json").read_text())["pretrained_cfg"]


def test_label_names_land_in_pretrained_cfg_and_must_match_the_classes(exported, tmp_path):
    spec, model, folder = exported
    assert json.loads((folder / "config.json").read_text())["pretrained_cfg"]["label_names"] == list(CIFAR10)
    assert timm.create_model(f"local-dir:{folder}", pretrained=True).pretrained_cfg["label_names"] == list(CIFAR10)
    with pytest.raises(ExportError, match="3 label names for 10 classes; give one name per class"):
        export_to_timm(spec, model, tmp_path / "other", card=full_card(label_names=("a", "b", "c")))
    assert not (tmp_path / "other").exists()


def test_the_dataset_registry_names_every_datasets_classes(tmp_path):
    assert dataset_info("digits").class_names == tuple(str(digit) for digit in range(10))
    assert dataset_info("cifar10").class_names == CIFAR10
    assert len(dataset_info("cifar100").class_names) == 100 == len(set(dataset_info("cifar100").class_names))
    for name in ("animals", "cat", "dog"):
        (tmp_path / "train" / name).mkdir(parents=True)
    assert dataset_info("imagefolder", tmp_path).class_names == ("animals", "cat", "dog")  # ImageFolder's order
    card = data_card(DataSettings(dataset="imagefolder", data_dir=str(tmp_path), seed=7), ModelCard(method="x"))
    assert card.label_names == ("animals", "cat", "dog") and card.seed == 7 and card.method == "x"
    missing = data_card(DataSettings(dataset="imagefolder", data_dir=str(tmp_path / "absent")))
    assert missing.label_names is None  # an image folder not on this machine: exported without names


def test_the_emnist_and_fashion_names_are_torchvisions():
    import torchvision.datasets as tv

    assert dataset_info("emnist").class_names == tuple(tv.EMNIST.classes_split_dict["balanced"])
    assert dataset_info("emnist_byclass").class_names == tuple(tv.EMNIST.classes_split_dict["byclass"])
    assert dataset_info("fashion_mnist").class_names == tuple(tv.FashionMNIST.classes)
    assert dataset_info("mnist").class_names == tuple(name.split(" - ")[0] for name in tv.MNIST.classes)


def test_provenance_names_code_settings_seed_and_versions_without_importing_nni(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "nni", None)  # `import nni` now raises: the version must come from metadata
    spec = searched_spec()
    card = full_card(settings_sha256=settings_digest({"lr": 0.05, "scope": "m"}))
    folder = export_to_timm(spec, build_model(spec), tmp_path / "export", card=card, extra={"test_accuracy": 0.9})
    record = json.loads((folder / "resnas.json").read_text())
    origin = record["provenance"]
    assert origin["resnas_version"] == metadata.version("resnas") and origin["nni"] == metadata.version("nni")
    assert origin["torch"] == torch.__version__ and origin["timm"] == timm.__version__
    assert origin["seed"] == 3 and origin["settings_sha256"] == settings_digest({"scope": "m", "lr": 0.05})
    assert origin["git_commit"] is None or re.fullmatch(r"[0-9a-f]{40}", origin["git_commit"])
    assert record["test_accuracy"] == 0.9 and record["card"]["label_names"] == list(CIFAR10)


def test_git_commit_is_none_outside_a_checkout(tmp_path, monkeypatch):
    monkeypatch.setattr(model_card, "REPO_ROOT", tmp_path)
    assert model_card.git_commit.__wrapped__() == (None, None)
    monkeypatch.setattr(model_card.subprocess, "run", lambda *a, **k: (_ for _ in ()).throw(FileNotFoundError("git")))
    assert model_card.git_commit.__wrapped__() == (None, None)  # no git installed


def test_the_settings_digest_is_canonical():
    assert settings_digest({"a": 1, "b": [1, 2]}) == settings_digest({"b": [1, 2], "a": 1})
    assert settings_digest({"a": 1}) != settings_digest({"a": 2})
    assert re.fullmatch(r"[0-9a-f]{64}", settings_digest({}))


@dataclass(frozen=True)
class _MethodSettings(DataSettings):
    zeta: float = 0.5
    steps: int = 3


def test_data_card_shows_the_methods_own_settings_and_the_input():
    card = data_card(_MethodSettings(dataset="digits", image_size=16))
    assert card.method_settings == {"image_size": 16, "augment": "default", "batch_size": 64, "zeta": 0.5, "steps": 3}
    assert card.settings_sha256 == settings_digest(_MethodSettings(dataset="digits", image_size=16).to_dict())
    assert card.dataset == "digits" and card.label_names == tuple("0123456789")


def test_the_architecture_is_described_in_a_few_lines():
    lines = describe_architecture(searched_spec())
    assert lines[0] == "stem: 3x3/1 conv, 8 channels, relu" and lines[-1] == "head: global average pool, fc 256 -> 10"
    assert lines[1] == "layer1: 3 x bottleneck, 32 channels out, stride 1: all k3 relu" and len(lines) == 6

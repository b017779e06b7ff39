"""The ProxylessNAS tuner and trial: settings, one trial per scope, resume, gate trajectories, the exit rule,
and a smoke epoch of each shipped scope config."""

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml

from strategies.proxyless.trajectory import GateTrajectory, SearchExit, normalised_entropy
from strategies.proxyless import ProxylessSearchConfig, ProxylessTuner, parse_tuner_args
from strategies.settings import SettingsError
from strategies.reporting import PrintReporter
from strategies.trial import run_trial

REPO = Path(__file__).resolve().parents[1]
SCOPE_CONFIGS = [REPO / "nni_configs" / f"proxyless_scope_{scope}.yml" for scope in "smlf"]


def class_args(path: Path) -> dict:
    return yaml.safe_load(path.read_text())["tuner"]["classArgs"]


def test_paper_defaults_are_the_settings_defaults():
    settings = parse_tuner_args(class_args(SCOPE_CONFIGS[1]))[0]
    assert (settings.scope, settings.dataset, settings.batch_size) == ("m", "cifar10", 64)
    assert (settings.lr, settings.momentum, settings.weight_decay) == (0.05, 0.9, 4e-5)
    assert (settings.arch_lr, settings.arch_weight_decay, settings.flops_penalty) == (1e-3, 0.0, 0.0)
    assert settings.exit_patience == 0  # the exit rule is off for the paper's configs
    assert settings.image_size == 224  # resized, so that no searched kernel slides over a map smaller than itself
    assert ProxylessSearchConfig.from_settings(settings, (3, 224, 224)).arch_betas == (0.0, 0.999)  # beta1 = 0


def test_the_table_one_config_issues_one_trial_per_scope_then_no_more():
    import nni

    config = yaml.safe_load((REPO / "nni_configs" / "proxyless_scopes.yml").read_text())
    tuner = ProxylessTuner(**config["tuner"]["classArgs"])
    scopes = [tuner.generate_parameters(i)["settings"]["scope"] for i in range(5)]
    assert scopes == ["none", "s", "m", "l", "f"]  # the plain ResNet-50 row first, then the scopes
    assert config["maxTrialNumber"] == 5
    with pytest.raises(nni.NoMoreTrialError):
        tuner.generate_parameters(5)


def test_resume_does_not_search_a_finished_scope_again():
    tuner = ProxylessTuner(**class_args(REPO / "nni_configs" / "proxyless_scopes.yml"))
    finished = [{"parameter": {"method": "proxyless", "settings": {"scope": "m"}}, "value": 0.9}]
    tuner.import_data(finished)
    assert [tuner.generate_parameters(i)["settings"]["scope"] for i in range(4)] == ["none", "s", "l", "f"]


def test_scope_and_scopes_together_are_refused():
    with pytest.raises(SettingsError, match="either 'scope' or 'scopes'"):
        parse_tuner_args({"scope": "m", "scopes": ["s"]})


def test_normalised_entropy_and_argmax_changes():
    assert normalised_entropy([0.5, 0.5]) == pytest.approx(1.0)
    assert normalised_entropy([1.0, 0.0, 0.0]) == 0.0
    assert normalised_entropy([0.7, 0.2, 0.1]) == pytest.approx(
        -(0.7 * math.log(0.7) + 0.2 * math.log(0.2) + 0.1 * math.log(0.1)) / math.log(3)
    )
    trajectory = GateTrajectory(candidates={"a": ["k3", "k5"], "b": ["relu", "mish"]})
    assert trajectory.record({"a": [0.6, 0.4], "b": [0.5, 0.5]})["argmax_changes"] == 2
    assert trajectory.record({"a": [0.4, 0.6], "b": [0.6, 0.4]})["argmax_changes"] == 1
    stats = trajectory.record({"a": [0.1, 0.9], "b": [0.9, 0.1]})
    assert stats["argmax_changes"] == 0 and stats["gate_entropy"] == pytest.approx(normalised_entropy([0.1, 0.9]))


def test_exit_rule_needs_both_a_stable_argmax_and_low_entropy():
    rule = SearchExit(patience=2, entropy_threshold=0.5)
    assert not rule.should_stop(argmax_changes=0, gate_entropy=0.2)  # stable for 1 epoch
    assert rule.should_stop(argmax_changes=0, gate_entropy=0.2)  # stable for 2 epochs, decided
    undecided = SearchExit(patience=1, entropy_threshold=0.5)
    assert not undecided.should_stop(argmax_changes=0, gate_entropy=0.9)
    assert not SearchExit(patience=0).should_stop(argmax_changes=0, gate_entropy=0.0)  # off


def test_trajectory_json_and_plot(tmp_path):
    trajectory = GateTrajectory(candidates={"layer4_0_kernel": ["k3", "k5"]})
    for p in (0.5, 0.6, 0.8):
        trajectory.record({"layer4_0_kernel": [p, 1 - p]})
    trajectory.save(tmp_path / "gates.json")
    assert GateTrajectory.load(tmp_path / "gates.json").epochs == trajectory.epochs
    trajectory.plot(tmp_path / "gates.png")
    assert (tmp_path / "gates.png").read_bytes()[:4] == b"\x89PNG"


def smoke_parameters(path: Path, **overrides) -> dict:
    """A shipped config's settings, shrunk to one short epoch on digits (CIFAR cannot be downloaded here)."""
    settings = parse_tuner_args(class_args(path))[0]
    # 129 px: the smallest size the settings accept with the paper's 7x7/s2 stem (stage 4 then 5x5).
    smoke = dict(dataset="digits", image_size=129, width_multiplier=1 / 16, search_epochs=1, retrain_epochs=1,
                 limit_train_batches=2, limit_val_batches=1, num_workers=0, batch_size=16)
    settings = replace(settings, **{**smoke, **overrides})
    return {"method": "proxyless", "settings": settings.to_dict()}


@pytest.mark.parametrize("config", SCOPE_CONFIGS, ids=[p.stem for p in SCOPE_CONFIGS])
def test_each_scope_config_runs_a_smoke_trial(config, tmp_path):
    reporter = PrintReporter()
    result = run_trial(smoke_parameters(config), tmp_path, reporter)
    scope = config.stem[-1]
    blocks = {"s": 3, "m": 9, "l": 13, "f": 16}[scope]
    assert result["scope"] == scope and len(result["architecture"]) == 2 * blocks
    assert reporter.result == result and 0.0 <= result["default"] <= 1.0
    epoch = reporter.history[0]
    assert {"default", "gate_entropy", "argmax_changes", "val_accuracy"} <= set(epoch)
    for name in ("arch.json", "gates.json", "gates.png", "supernet.ckpt", "retrain.ckpt", "timm_export/model.safetensors"):
        assert (tmp_path / name).is_file(), name
    assert_top_architectures(tmp_path, result, k=5)
    assert_shippable_card(tmp_path / "timm_export", result)


def assert_shippable_card(folder: Path, result: dict) -> None:
    """The trial's export carries its card, class names and provenance (the contracts: tests/test_model_card.py)."""
    front_matter = yaml.safe_load((folder / "README.md").read_text().split("---")[1])
    assert front_matter["library_name"] == "timm" and "proxyless" in front_matter["tags"]
    assert f"{100 * result['test_accuracy']:.2f}% on {result['test_split']}" in (folder / "README.md").read_text()
    config = json.loads((folder / "config.json").read_text())
    assert config["pretrained_cfg"]["label_names"] == [str(digit) for digit in range(10)]  # digits
    record = json.loads((folder / "resnas.json").read_text())
    assert record["provenance"]["seed"] == 0 and len(record["provenance"]["settings_sha256"]) == 64
    assert record["card"]["method"] == "proxyless" and record["card"]["method_settings"]["scope"] == result["scope"]


def assert_top_architectures(folder: Path, result: dict, k: int) -> None:
    """top_architectures.json: k paths, argmax first (the one retrained), products of the final gates, best first."""
    from search_spaces import ArchSpec

    top = json.loads((folder / "top_architectures.json").read_text())
    ranked = top["architectures"]
    assert len(ranked) == k and [entry["rank"] for entry in ranked] == list(range(1, k + 1))
    assert ranked[0]["sample"] == result["architecture"]
    assert ArchSpec.from_dict(ranked[0]["arch_spec"]) == ArchSpec.from_json((folder / "arch.json").read_text())
    final_gates = json.loads((folder / "gates.json").read_text())["epochs"][-1]
    for entry in ranked:
        assert entry["probability"] == pytest.approx(math.prod(top["probabilities"][label][value]
                                                               for label, value in entry["sample"].items()))
        for label, value in entry["sample"].items():  # the float64 gates agree with the trajectory's float32 ones
            index = list(top["probabilities"][label]).index(value)
            assert top["probabilities"][label][value] == pytest.approx(final_gates[label][index], abs=1e-6)
    assert all(a["probability"] >= b["probability"] for a, b in zip(ranked, ranked[1:]))
    assert len({json.dumps(entry["sample"], sort_keys=True) for entry in ranked}) == k
    assert top["supernet"] == "supernet.ckpt" and top["settings"]["top_k"] == k
    assert set(top["gate_labels"].values()) == set(top["probabilities"])


def test_an_interrupted_search_resumes_from_its_last_epoch(tmp_path):
    parameters = smoke_parameters(SCOPE_CONFIGS[0], search_epochs=2)
    first = PrintReporter()
    run_trial(parameters, tmp_path, first)
    # Pretend the trial died after epoch 1: keep a checkpoint that says so, then run the same trial again.
    state = torch.load(tmp_path / "supernet.ckpt", weights_only=True)
    state["extra"]["epoch"] = state["epoch"] = 1
    torch.save(state, tmp_path / "supernet.ckpt")
    second = PrintReporter()
    result = run_trial(parameters, tmp_path, second)
    assert [h["epoch"] for h in second.history] == [2]  # epoch 1 was not searched again
    assert result["search_epochs_run"] == 2
    assert len(json.loads((tmp_path / "gates.json").read_text())["epochs"]) == 2


def test_a_corrupt_supernet_checkpoint_restarts_the_search(tmp_path):
    (tmp_path / "supernet.ckpt").write_bytes(b"\x00garbage")
    reporter = PrintReporter()
    run_trial(smoke_parameters(SCOPE_CONFIGS[0]), tmp_path, reporter)
    assert [h["epoch"] for h in reporter.history] == [1]


ALL_CONFIGS = sorted((REPO / "nni_configs").glob("*.yml"))


@pytest.mark.parametrize("config", ALL_CONFIGS, ids=[p.stem for p in ALL_CONFIGS])
def test_every_shipped_config_validates_with_its_kernels_on_large_enough_maps(config):
    from strategies.launch.config import load_experiment_config

    load_experiment_config(config)  # the settings check refuses a kernel on a map smaller than itself


def config_with(tmp_path: Path, source: Path, **class_args) -> Path:
    config = yaml.safe_load(source.read_text())
    config["tuner"]["classArgs"].update(class_args)
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize(
    "class_args,smallest,where",
    [
        ({"image_size": 32, "stem": "imagenet"}, 129, "layer4.0 on a 2x2 map"),  # CIFAR at 32 px, 7x7/s2 stem
        ({"image_size": 128, "stem": "imagenet"}, 129, "layer4.1 on a 4x4 map"),  # one px short
        ({"image_size": 32, "stem": "cifar"}, 33, "layer4.1 on a 4x4 map"),
    ],
)
def test_a_kernel_on_a_map_smaller_than_itself_is_refused_naming_the_smallest_image_size(
    tmp_path, class_args, smallest, where
):
    from strategies.launch.config import ConfigError, load_experiment_config

    path = config_with(tmp_path, SCOPE_CONFIGS[0], **class_args)
    with pytest.raises(ConfigError) as refused:
        load_experiment_config(path)
    message = str(refused.value)
    assert where in message and message.endswith(f"set image_size to at least {smallest}.")
    assert "\n" not in message and message.count(". ") == 0  # one sentence
    load_experiment_config(config_with(tmp_path, SCOPE_CONFIGS[0], **{**class_args, "image_size": smallest}))


def test_the_native_size_is_checked_when_no_image_size_is_given():
    with pytest.raises(SettingsError, match="cifar10's native 32 px.*at least 129"):
        parse_tuner_args({"scope": "s", "dataset": "cifar10", "image_size": None})
    assert parse_tuner_args({"scope": "none", "image_size": None})[0].scope == "none"  # searches no kernel
    assert parse_tuner_args({"scope": "f"})[0].image_size == 224  # the defaults are the paper's, and valid


def test_the_baseline_trial_retrains_the_plain_resnet50_without_a_search(tmp_path):
    from search_spaces import ArchSpec, measure_cost, resnet_spec

    parameters = smoke_parameters(REPO / "nni_configs" / "proxyless_scopes.yml", scope="none")
    reporter = PrintReporter()
    result = run_trial(parameters, tmp_path, reporter)
    plain = resnet_spec(50, num_classes=10, stem="imagenet", width_multiplier=1 / 16, in_channels=1)
    assert ArchSpec.from_json((tmp_path / "arch.json").read_text()) == plain
    assert (result["scope"], result["architecture"], result["search_seconds"]) == ("none", {}, 0)
    assert (result["search_epochs_run"], result["stop_epoch"]) == (0, None)
    assert result["params"] == measure_cost(plain, input_size=(1, 129, 129)).params
    assert reporter.result == result and reporter.history == [] and 0.0 <= result["default"] <= 1.0
    (tmp_path / "s").mkdir()
    searched = run_trial(smoke_parameters(SCOPE_CONFIGS[0]), tmp_path / "s", PrintReporter())
    assert set(result) == set(searched)  # the same final dict as a searched scope
    assert (tmp_path / "retrain.ckpt").is_file() and (tmp_path / "timm_export" / "model.safetensors").is_file()
    assert not (tmp_path / "supernet.ckpt").exists()

"""NNI's built-in tuners on resnas spaces (strategies.sampled): the searchSpace files are the spaces', a sampled
dict builds exactly the network it names, configs are checked against their settings, and Random and TPE run
on the real NNI manager, through plain `nnictl create` and through `resnas create`."""

import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import worker_port
from search_spaces.builder import build_model
from search_spaces.spec import cifar_resnet_spec
from strategies.cli.space import search_space_text
from strategies.launch import wait_for_experiment
from strategies.launch.config import ConfigError, load_experiment_config
from strategies.launch.nnictl import free_port
from strategies.launch.rest import ExperimentHandle, experiment_summary, rest
from strategies.reporting import PrintReporter
from strategies.sampled import parse_sampled_settings, read_settings_file, trial_parameters
from strategies.settings import SettingsError
from strategies.trial import run_trial

REPO = Path(__file__).resolve().parents[1]
SETTINGS_FILES = sorted((REPO / "nni_configs" / "sampled").glob("*.settings.yml"))
BUILTIN_CONFIGS = ["random_scope_m_quick.yml", "tpe_depths_quick.yml", "random_scope_m.yml", "tpe_stagewise_depths.yml",
                   "evolution_resnet50_depths.yml"]


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def random_samples(labels, count: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return [{label: rng.choice(values) for label, values in labels} for _ in range(count)]


@pytest.mark.parametrize("settings_file", SETTINGS_FILES, ids=lambda path: path.name.split(".")[0])
def test_the_shipped_search_space_files_are_the_ones_resnas_space_writes(settings_file):
    shipped = settings_file.with_name(settings_file.name.replace(".settings.yml", ".space.json"))
    assert shipped.read_text() == search_space_text(settings_file)
    space = json.loads(shipped.read_text())
    labels = read_settings_file(settings_file).choice_labels()
    assert [(label, space[label]["_value"]) for label in space] == labels  # same labels, values and order


SMALL = {
    "scope": {"space": "scope", "method_settings": {"scope": "l", "dataset": "digits", "image_size": 33,
                                                    "stem": "cifar", "width_multiplier": 0.0625}},
    "resnet50_depths": {"space": "resnet50_depths", "depth_ranges": [[1, 3], [2, 4], [1, 2], [1, 3]],
                        "method_settings": {"scope": "none", "dataset": "digits", "image_size": 16, "stem": "cifar",
                                            "width_multiplier": 0.0625}},
    "cifar_depths": {"space": "cifar_depths", "depth_ranges": [[1, 4], [2, 3], [1, 5]],
                     "method_settings": {"dataset": "digits", "image_size": 16, "widths": [8, 16, 32]}},
}


@pytest.mark.parametrize("name", SMALL)
def test_a_sampled_choice_dict_builds_exactly_the_network_it_names(name, one_thread_and_seeded):
    """The NNI supernet's path (space.freeze) and build_model(to_spec) are the same network: equal parameter
    counts, and the frozen path's weights load strictly into the built one."""
    from search_spaces.spaces import DepthResNet, ScopedResNet50

    settings = parse_sampled_settings(SMALL[name])
    choices = settings.choices(num_classes=10, in_channels=1)
    paired = settings.paired()
    if name == "scope":
        space = ScopedResNet50(paired.scope, num_classes=10, stem=paired.stem,
                               width_multiplier=paired.width_multiplier, in_channels=1)
    else:
        block, widths, stem = (("bottleneck", None, paired.stem) if name == "resnet50_depths"
                               else ("basic", paired.widths, "cifar"))
        space = DepthResNet(settings.depth_ranges, block, widths, num_classes=10, stem=stem,
                            width_multiplier=getattr(paired, "width_multiplier", 1.0), in_channels=1)
    assert space.choice_labels() == choices.choice_labels()
    for sample in random_samples(choices.choice_labels(), 4):
        spec = choices.to_spec(sample)
        frozen, built = space.freeze(sample), build_model(spec)
        assert n_params(frozen) == n_params(built)
        built.load_state_dict(frozen.state_dict(), strict=True)
        if name == "cifar_depths":  # the stage-wise search's own network for those depths
            depths = tuple(sample[f"layer{index}_depth"] for index in (1, 2, 3))
            assert spec == cifar_resnet_spec(depths, (8, 16, 32), num_classes=10, in_channels=1)


@pytest.mark.parametrize("data, message", [
    ({"space": "cells", "method_settings": {}}, "space='cells' is not a valid one of 'scope'"),
    ({"space": "scope", "recipe": "stagewise", "method_settings": {}}, "trained with the proxyless recipe"),
    ({"space": "cifar_depths", "method_settings": {}}, "needs depth_ranges"),
    ({"space": "scope", "depth_ranges": [[1, 2]], "method_settings": {}}, "takes no depth_ranges"),
    ({"space": "cifar_depths", "depth_ranges": [[1, 2]], "method_settings": {}}, "1 stages for the 3 widths"),
    ({"space": "cifar_depths", "depth_ranges": [[3, 1], [1, 2], [1, 2]], "method_settings": {}},
     "must satisfy 0 <= min <= max"),
    ({"space": "scope", "method_settings": {"scpoe": "m"}}, "unknown key 'scpoe' (did you mean 'scope'?)"),
    ({"space": "scope", "method_settings": {"scope": "m"}, "epochs": 3}, "unknown key 'epochs'"),
])
def test_bad_settings_are_one_sentence_naming_the_fix(data, message):
    with pytest.raises(SettingsError, match=re.escape(message)):
        parse_sampled_settings(data)


@pytest.mark.parametrize("name", BUILTIN_CONFIGS)
def test_the_builtin_tuner_configs_validate(name):
    config = load_experiment_config(REPO / "nni_configs" / name)
    assert config["tuner"]["name"] in ("Random", "TPE", "Evolution")


def _edited_config(tmp_path: Path, name: str, **changes) -> Path:
    config = yaml.safe_load((REPO / "nni_configs" / name).read_text())
    config["trialCodeDirectory"] = str(REPO)
    config["searchSpaceFile"] = str(REPO / "nni_configs" / config["searchSpaceFile"])
    config.update(changes)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_stale_search_space_or_a_missing_settings_file_is_refused_before_launch(tmp_path):
    stale = _edited_config(tmp_path, "tpe_depths_quick.yml",
                           searchSpaceFile=str(REPO / "nni_configs/sampled/scope_m_digits.space.json"))
    with pytest.raises(ConfigError, match=r"its searchSpace is not the space .*cifar_depths_digits.settings.yml "
                                          r"defines; regenerate it with `resnas space"):
        load_experiment_config(stale)
    bare = _edited_config(tmp_path, "random_scope_m_quick.yml", trialCommand="python -m strategies.trial")
    with pytest.raises(ConfigError, match="names no settings file; add --settings FILE"):
        load_experiment_config(bare)
    missing = _edited_config(tmp_path, "random_scope_m_quick.yml",
                             trialCommand="python -m strategies.trial --settings nni_configs/sampled/nope.yml")
    with pytest.raises(ConfigError, match="settings file .*nope.yml does not exist"):
        load_experiment_config(missing)


def test_a_trial_trains_the_sample_reports_validation_as_default_and_exports(tmp_path, one_thread_and_seeded):
    sample = {"layer1_depth": 2, "layer2_depth": 1, "layer3_depth": 1}
    parameters = trial_parameters(sample, REPO / "nni_configs/sampled/cifar_depths_digits.settings.yml")
    assert parameters["method"] == "sampled" and parameters["sample"] == sample
    parameters["settings"]["method_settings"].update(epochs=2, limit_train_batches=2, widths=[8, 8, 8])
    reports = []

    class Recording(PrintReporter):
        def intermediate(self, metrics):
            reports.append(metrics)

    final = run_trial(parameters, tmp_path, Recording())
    assert [report["epoch"] for report in reports] == [1, 2]
    assert final["default"] == final["val_accuracy"] == reports[-1]["default"]  # never the test split
    assert 0.0 <= final["test_accuracy"] <= 1.0 and final["depths"] == [2, 1, 1]
    assert final["architecture"] == sample and final["params"] == n_params(build_model(
        cifar_resnet_spec((2, 1, 1), (8, 8, 8), num_classes=10, in_channels=1)))
    assert (Path(final["export_dir"]) / "model.safetensors").is_file()


# ---- the real manager -------------------------------------------------------------------------------------------
TINY = {"retrain_epochs": 1, "epochs": 1, "limit_train_batches": 3, "limit_val_batches": 2, "batch_size": 32}


def _quick_config(tmp_path: Path, name: str, trials: int = 2) -> Path:
    """The shipped quick config, its settings cut to a few batches (a copy of the settings file beside it)."""
    config = yaml.safe_load((REPO / "nni_configs" / name).read_text())
    settings_file = re.search(r"--settings (\S+)", config["trialCommand"]).group(1)
    settings = yaml.safe_load((REPO / settings_file).read_text())
    recipe = "retrain_epochs" if settings["space"] == "scope" else "epochs"
    settings["method_settings"].update({key: value for key, value in TINY.items()
                                        if key not in ("retrain_epochs", "epochs") or key == recipe})
    (tmp_path / "trial.settings.yml").write_text(yaml.safe_dump(settings))
    config.update(trialCodeDirectory=str(REPO), maxTrialNumber=trials,
                  searchSpaceFile=str(REPO / "nni_configs" / config["searchSpaceFile"]),
                  experimentWorkingDirectory=str(tmp_path / "nni-experiments"),
                  trialCommand=config["trialCommand"].replace(settings_file, str(tmp_path / "trial.settings.yml")))
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    return path


def _loads_in_timm(export_dir: str, channels: int, size: int) -> list[int]:
    code = (f"import search_spaces.timm_entry, timm, torch, json; m = timm.create_model('local-dir:{export_dir}', "
            f"pretrained=True).eval(); print(json.dumps(list(m(torch.zeros(1, {channels}, {size}, {size})).shape)))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    return json.loads(loaded.stdout.strip().splitlines()[-1])


def _check_trials(summary: dict, space: dict) -> None:
    assert [trial["status"] for trial in summary["trials"]] == ["SUCCEEDED", "SUCCEEDED"], summary["trials"]
    for trial in summary["trials"]:
        assert set(trial["parameters"]["parameters"]) == set(space)  # the built-in tuner's sample, nothing else
        assert trial["final"]["default"] == trial["final"]["val_accuracy"] and "test_accuracy" in trial["final"]
    # Each sample was trained once; NNI 3.0's local service may hand two trials started together each other's
    # parameters (its records keep the form each was created with), so compare them as a whole, not per trial.
    trained = sorted(json.dumps(trial["final"]["architecture"], sort_keys=True) for trial in summary["trials"])
    sampled = sorted(json.dumps(trial["parameters"]["parameters"], sort_keys=True) for trial in summary["trials"])
    assert trained == sampled
    best = summary["best"]
    assert best["default"] == max(trial["final"]["default"] for trial in summary["trials"])


@pytest.mark.e2e
def test_nnictl_create_runs_the_random_tuner_on_scope_m_and_exports_the_best_to_timm(tmp_path):
    """Plain `nnictl create` (no resnas launcher, no preload): NNI's Random tuner samples scope m's choices. As
    for a user, the venv is activated (its python first on PATH: trials run `python -m strategies.trial`)."""
    config = _quick_config(tmp_path, "random_scope_m_quick.yml")
    port = free_port(worker_port(8840))  # no resume here: any free port will do
    started = subprocess.run([sys.executable, "-m", "nni.tools.nnictl.nnictl", "create", "--config", str(config),
                              "--port", str(port)], capture_output=True, text=True, cwd=REPO, timeout=300,
                             env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"})
    assert started.returncode == 0, started.stdout[-2000:] + started.stderr[-2000:]
    handle = ExperimentHandle("", port, "127.0.0.1", config, tmp_path / "nni-experiments")
    try:
        handle.id = rest(port, "experiment")["id"]
        assert wait_for_experiment(handle, timeout=600) == "DONE"
        summary = experiment_summary(handle)
    finally:  # by ID from nnictl's registry, or by port before the ID was known
        subprocess.run([sys.executable, "-m", "nni.tools.nnictl.nnictl", "stop",
                        *([handle.id] if handle.id else ["--port", str(port)])], capture_output=True, timeout=120)
    _check_trials(summary, json.loads((REPO / "nni_configs/sampled/scope_m_digits.space.json").read_text()))
    assert _loads_in_timm(summary["export_dir"], channels=1, size=33) == [1, 10]


@pytest.mark.e2e
def test_resnas_create_runs_the_tpe_tuner_on_stage_depths(tmp_path):
    config = _quick_config(tmp_path, "tpe_depths_quick.yml")
    created = subprocess.run([sys.executable, "-m", "strategies.cli", "create", "--config", str(config), "--port",
                              str(worker_port(8845)), "--wait", "--timeout", "600"],
                             capture_output=True, text=True, cwd=REPO, timeout=900)
    assert created.returncode == 0, created.stdout[-3000:] + created.stderr[-3000:]
    line = json.loads(created.stdout.strip().splitlines()[-1])
    assert line["status"] == "DONE" and [trial["status"] for trial in line["trials"]] == ["SUCCEEDED"] * 2
    space = json.loads((REPO / "nni_configs/sampled/cifar_depths_digits.space.json").read_text())
    best = line["best"]
    assert best["default"] == best["val_accuracy"] and set(best["architecture"]) == set(space)
    assert best["depths"] == [best["architecture"][label] for label in space]
    assert _loads_in_timm(line["export_dir"], channels=1, size=16) == [1, 10]

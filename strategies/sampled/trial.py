"""One built-in-tuner trial: build exactly the network the sampled choices name, train it with the recipe of
the method that searches its space, report every epoch's validation accuracy, test it and export it to timm.

The final `default` is the *validation* accuracy: NNI's tuners (TPE, Evolution) learn from the final `default`,
and a search that learned from the test split would be tuned on it. The test accuracy is reported beside it
(`test_accuracy`), measured on the same held-out split as every other method's. With latency_table and
latency_target_ms in method_settings, a sample predicted over the target fails at once without training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from search_spaces.builder import build_model
from search_spaces.model_card import ModelCard
from trainers import OptimConfig

from ..data import make_job_datamodule
from ..multi_trial.job_trial import cost_facts, test_and_export, train
from ..proxyless.settings import ProxylessSettings
from ..proxyless.trial import retrain_optim
from ..reporting import Reporter
from ..settings import SettingsError
from ..stagewise.settings import StagewiseSettings
from ..stagewise.trial import candidate_optim
from .settings import SampledSettings, parse_sampled_settings


def recipe(paired: ProxylessSettings | StagewiseSettings) -> tuple[OptimConfig, int]:
    """(optimiser, epochs) of the paired method's training of one network: ProxylessNAS's retrain from scratch,
    or the stage-wise candidate training."""
    if isinstance(paired, ProxylessSettings):
        return retrain_optim(paired), paired.retrain_epochs
    return candidate_optim(paired, paired.epochs), paired.epochs


def run_sampled_trial(parameters: dict[str, Any], output_dir: Path, reporter: Reporter) -> dict[str, Any]:
    settings = parse_sampled_settings(parameters.get("settings"), "trial settings")
    sample = parameters.get("sample")
    if not isinstance(sample, dict) or not sample:
        raise SettingsError("the trial got no sampled choices; run it under an NNI tuner with the searchSpace "
                            "`resnas space` writes for its settings file.")
    paired = settings.paired()
    torch.manual_seed(paired.seed)
    datamodule = make_job_datamodule(paired)
    info = datamodule.info
    spec = settings.choices(info.num_classes, info.in_channels).to_spec(sample)
    # With latency_table and latency_target_ms: a sample over the target is not trained; the trial fails at once,
    # and NNI's tuners sample on.
    paired.check_within_budget(spec, "this sample", "trial settings")
    model = build_model(spec)
    optim, epochs = recipe(paired)
    fitted = train(model, datamodule, paired, optim, epochs, reporter)
    tested = test_and_export(model, spec, datamodule, paired, output_dir, card=_card(settings))
    final = {
        "default": fitted.final_val_accuracy,
        "val_accuracy": fitted.final_val_accuracy,
        **tested,
        **cost_facts(spec, paired),
        "space": settings.space,
        "architecture": {label: sample[label] for label, _ in settings.choice_labels()},
        "depths": list(spec.depths),
        "epochs": epochs,
    }
    reporter.final(final)
    return final


def _card(settings: SampledSettings) -> ModelCard:
    return ModelCard(method="sampled", method_description=(
        f"a network an NNI built-in tuner sampled from resnas's {settings.space} space, trained from scratch with "
        f"the {settings.recipe_name} recipe"))

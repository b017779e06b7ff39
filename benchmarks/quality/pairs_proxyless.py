"""The ProxylessNAS pair: a search-scope trial vs
- random: NNI-style Random over the same scope's choices, each path retrained with the recipe, at its budget;
- ws_random: random paths scored on the trained supernet (its validation accuracy with the path fixed), the best
  retrained; it reuses this seed's supernet, whose training FLOPs it books as its own;
- plain: the scope's base network (scope none: k3/ReLU everywhere) trained with the whole budget;
and, for the first seed, Kendall's tau between the supernet's ranking of sampled paths and their stand-alone
validation accuracies (each path retrained with the recipe).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from search_spaces.cost import measure_cost
from search_spaces.spec import resnet_spec
from strategies.data import input_size
from strategies.proxyless.settings import ProxylessSearchConfig, ProxylessSettings
from strategies.settings import parse_settings
from trainers import dataset_info, training_device
from trainers.budget import training_flops

from .pairs_multi_trial import RandomSampler, train_sample
from .runs import (
    Context,
    Outcome,
    QuietReporter,
    budget_limited_search,
    epochs_for_budget,
    images_per_epoch,
    ledger_part,
    outcome_of,
    search_facts,
)

PAIR = "proxyless"
SUPERNET_KINDS = ("supernet_weights", "supernet_architecture")  # the ledger lines of the supernet's training


def proxyless_pair(ctx: Context, seed: int, kendall: bool) -> None:
    from strategies.proxyless.trial import run_proxyless_trial
    from strategies.sampled.settings import parse_sampled_settings

    settings = ctx.preset.pair_settings("proxyless", seed)

    def search(work: Path) -> Outcome:
        result = run_proxyless_trial({"method": "proxyless", "settings": settings}, work, QuietReporter())
        return outcome_of(result, sample=result["architecture"], search_epochs_run=result.get("search_epochs_run"))

    method = ctx.run(PAIR, "proxyless", seed, search)
    if method is None:
        return
    budget, images = ctx.budget(method), images_per_epoch(settings)
    sampled = {"space": "scope", "method_settings": settings}
    space = parse_sampled_settings(sampled)
    labels = space.search_space()
    info = dataset_info(settings["dataset"], settings.get("data_dir", "data"))
    choices, size = space.choices(info.num_classes, info.in_channels), input_size(space.paired())
    retrain_epochs = space.paired().retrain_epochs

    def random_search(work: Path) -> Outcome:
        best, trials = budget_limited_search(
            RandomSampler(labels, seed), lambda sample, index: train_sample(sampled, sample, work / f"trial{index}"),
            lambda sample: training_flops(measure_cost(choices.to_spec(sample), size).flops, retrain_epochs * images),
            budget, ctx.preset.max_trials)
        return outcome_of(best.result, **search_facts(best, trials, budget))

    ctx.run(PAIR, "random", seed, random_search)
    supernet = ctx.work_dir(PAIR, "proxyless", seed) / "supernet.ckpt"
    draw = RandomSampler(labels, seed + 10_000)  # other draws than the random baseline's
    count = max(ctx.preset.supernet_paths, ctx.preset.kendall_paths)
    paths = [sample for sample in (draw(index) for index in range(count)) if sample is not None]
    scores: list[tuple[dict[str, Any], float]] = []

    def supernet_scores() -> list[tuple[dict[str, Any], float]]:
        if not scores:  # once per seed, for the weight-sharing search and Kendall's tau alike
            scores.extend(score_paths(settings, supernet, paths))
        return scores

    def weight_sharing(work: Path) -> Outcome:
        candidates = supernet_scores()[: ctx.preset.supernet_paths]
        sample, supernet_val = max(candidates, key=lambda pair: pair[1])
        result, cached_flops = standalone(ctx, seed, sampled, sample, work)
        outcome = outcome_of(result, supernet_val_accuracy=supernet_val, paths_scored=len(candidates), sample=sample)
        outcome.extra_train_flops = ledger_part(method, *SUPERNET_KINDS) + cached_flops
        return outcome

    ctx.run(PAIR, "ws_random", seed, weight_sharing)
    ctx.run(PAIR, "plain", seed, lambda work: _plain(settings, budget, images, work))
    if kendall and str(seed) not in ctx.results.data["kendall"]:
        _kendall(ctx, seed, sampled, supernet_scores()[: ctx.preset.kendall_paths])


def _plain(settings: dict[str, Any], budget: int, images: int, work: Path) -> Outcome:
    """Table I's plain network of the same stem and width (scope none), retrained for the whole budget."""
    from strategies.proxyless.trial import run_proxyless_trial

    parsed = parse_settings(ProxylessSettings, {**settings, "scope": "none"}, "benchmark plain")
    info = dataset_info(parsed.dataset, parsed.data_dir)
    spec = resnet_spec(50, num_classes=info.num_classes, stem=parsed.stem, width_multiplier=parsed.width_multiplier,
                       in_channels=info.in_channels)
    epochs = epochs_for_budget(budget, measure_cost(spec, input_size(parsed)).flops, images)
    plain = {**settings, "scope": "none", "retrain_epochs": epochs}
    result = run_proxyless_trial({"method": "proxyless", "settings": plain}, work, QuietReporter())
    return outcome_of(result, epochs=epochs)


def standalone(ctx: Context, seed: int, sampled: dict[str, Any], sample: dict[str, Any],
               work: Path) -> tuple[dict[str, Any], int]:
    """A path retrained with the recipe, once per seed and path (results.json keeps it); returns the result and,
    when it was trained before this call, its training FLOPs (a fresh training is booked by the ledger)."""
    from trainers.budget import measuring

    key = f"{seed}:{json.dumps(sample, sort_keys=True)}"
    cache = ctx.results.data["standalone"]
    if key in cache:
        return cache[key]["result"], cache[key]["train_flops"]
    with measuring() as ledger:
        result = train_sample(sampled, sample, work / "standalone")
    keep = {name: result[name] for name in ("val_accuracy", "test_accuracy", "params", "flops", "export_dir")}
    cache[key] = {"result": keep, "train_flops": ledger.total}
    ctx.results.save()
    return keep, 0


def _kendall(ctx: Context, seed: int, sampled: dict[str, Any], scored: list[tuple[dict[str, Any], float]]) -> None:
    """Kendall's tau-b between the supernet's validation accuracies and the stand-alone ones of the same paths."""
    from scipy.stats import kendalltau

    work = ctx.work_root / PAIR / f"seed{seed}" / "kendall"
    rows = []
    for index, (sample, supernet_val) in enumerate(scored):
        result, _ = standalone(ctx, seed, sampled, sample, work / f"path{index}")
        rows.append({"sample": sample, "supernet_val_accuracy": supernet_val,
                     "standalone_val_accuracy": result["val_accuracy"]})
    tau, p_value = kendalltau([row["supernet_val_accuracy"] for row in rows],
                              [row["standalone_val_accuracy"] for row in rows])  # tau-b: ties are common here
    ctx.results.data["kendall"][str(seed)] = {"tau": float(tau), "p_value": float(p_value), "paths": len(rows),
                                              "rows": rows}
    ctx.results.save()


# ---- the supernet, read back ---------------------------------------------------------------------------------
def load_supernet(settings: dict[str, Any], checkpoint: Path):
    """The seed's trained ProxylessSearch (supernet weights and gates) from the trial's supernet.ckpt."""
    from search_spaces.spaces import ScopedResNet50
    from strategies.proxyless.search import ProxylessSearch

    if not checkpoint.exists():
        raise FileNotFoundError(f"{checkpoint} is missing; delete the proxyless run of this seed from results.json "
                                f"so that the search runs again and writes it.")
    parsed = parse_settings(ProxylessSettings, settings, "benchmark supernet")
    info = dataset_info(parsed.dataset, parsed.data_dir)
    space = ScopedResNet50(parsed.scope, num_classes=info.num_classes, stem=parsed.stem,
                           width_multiplier=parsed.width_multiplier, in_channels=info.in_channels)
    search = ProxylessSearch(space, ProxylessSearchConfig.from_settings(parsed, input_size(parsed)), training_device())
    search.load(checkpoint)
    return search


@torch.no_grad()
def score_paths(settings: dict[str, Any], checkpoint: Path,
                samples: list[dict[str, Any]]) -> list[tuple[dict[str, Any], float]]:
    """Each path's validation accuracy on the supernet with its gates fixed to the path (BN running statistics as
    the search left them: the search scores its own argmax path the same way)."""
    from strategies.data import make_job_datamodule

    search = load_supernet(settings, checkpoint)
    parsed = parse_settings(ProxylessSettings, settings, "benchmark supernet")
    loader = make_job_datamodule(parsed).val_dataloader()
    bank, scores = search.bank, []
    search.model.eval()
    for sample in samples:
        bank.mode = "argmax"  # any mode but "arch" runs exactly the active candidate of each gate
        bank.active = {label: bank.candidate_values[label].index(sample[label]) for label in bank.labels}
        bank.evaluated = {label: [index] for label, index in bank.active.items()}
        correct = count = 0
        for batch_index, (images, labels) in enumerate(loader):
            if parsed.limit_val_batches is not None and batch_index >= parsed.limit_val_batches:
                break
            logits = search.model(images.to(search.device))
            correct += int((logits.argmax(1) == labels.to(search.device)).sum())
            count += labels.numel()
        scores.append((sample, correct / max(1, count)))
    return scores

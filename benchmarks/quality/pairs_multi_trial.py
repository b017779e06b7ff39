"""The multi-trial pairs: each method searched in-process (strategies.local_search), its baselines at its budget.

- stagewise: vs Random and TPE over stage depths (the depths the search could reach) under the parameter cap of
  the network it found, trained with its candidate recipe for epochs + extra_epochs, as its final net is; and vs
  the uniform-depth network with the closest parameter count trained with the whole budget.
- nash: hill climbing vs its random walk (mode: random_walk, as many jobs and epochs) and the start net trained
  with the whole budget.
- resbuilder: layer pruning vs random block insertions and removals, widths then scaled uniformly to fill the
  FLOP budget zeta (ResBuilderSampler; No Reg RI recipe), vs MorphNet only (morphnet_only: true), and vs the start
  net trained with the whole budget.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from search_spaces.cost import measure_cost
from search_spaces.edits.resbuilder import insert_random_block, morphnet_width_step
from strategies.data import input_size
from strategies.local_search import search_locally
from strategies.settings import parse_settings
from trainers import dataset_info
from trainers.budget import training_flops

from .runs import (
    Context,
    Outcome,
    QuietReporter,
    budget_limited_search,
    epochs_for_budget,
    images_per_epoch,
    outcome_of,
    search_facts,
    train_and_test,
)

PROPOSAL_ATTEMPTS = 1000  # draws before a sampler says nothing fits its cap


def searched(method: str, work: Path, settings: dict[str, Any]) -> Outcome:
    summary = search_locally(method, work, **settings)
    if not summary:
        raise RuntimeError(f"the {method} search ended without a final network; see its log above.")
    return outcome_of(summary, **{key: summary[key] for key in ("depths", "start_default") if key in summary})


def whole_budget(spec, settings, optim, budget: int, images: int) -> Outcome:
    """`spec` trained from scratch for the epochs that spend `budget` training FLOPs."""
    forward = measure_cost(spec, input_size(settings)).flops
    result = train_and_test(spec, settings, optim, epochs_for_budget(budget, forward, images))
    return outcome_of(result, epochs=result["epochs"])


# ---- stage-wise ----------------------------------------------------------------------------------------------------
def stagewise_pair(ctx: Context, seed: int) -> None:
    from strategies.sampled.settings import parse_sampled_settings

    pair, settings = "stagewise", ctx.preset.pair_settings("stagewise", seed)
    method = ctx.run(pair, "stagewise", seed, lambda work: searched("stagewise", work, settings))
    if method is None:
        return  # the baselines are sized by the method's budget and network
    budget, cap = ctx.budget(method), int(method["params"])
    reach = settings["delta"] * settings["iterations"]  # the deepest a stage can grow in the search
    # Trained as the search's final net is: the candidate recipe for epochs, then extra_epochs (here one schedule).
    sampled = {"space": "cifar_depths", "depth_ranges": [[d, d + reach] for d in settings["start_depths"]],
               "method_settings": {**settings, "epochs": settings["epochs"] + settings["extra_epochs"]}}
    space = parse_sampled_settings(sampled)
    info = dataset_info(settings["dataset"], settings.get("data_dir", "data"))
    choices = space.choices(info.num_classes, info.in_channels)
    size = input_size(space.paired())
    cost = {}

    def cost_of(sample: dict[str, Any]):
        key = tuple(sorted(sample.items()))
        if key not in cost:
            cost[key] = measure_cost(choices.to_spec(sample), size)
        return cost[key]

    images = images_per_epoch(settings)
    epochs = sampled["method_settings"]["epochs"]

    def depth_search(work: Path, propose, learn=None) -> Outcome:
        best, trials = budget_limited_search(
            propose, lambda sample, index: train_sample(sampled, sample, work / f"trial{index}"),
            lambda sample: training_flops(cost_of(sample).flops, epochs * images), budget, ctx.preset.max_trials, learn)
        return outcome_of(best.result, **search_facts(best, trials, budget), param_cap=cap)

    def under_cap(sample: dict[str, Any]) -> bool:
        return cost_of(sample).params <= cap

    labels = space.search_space()
    ctx.run(pair, "random", seed, lambda work: depth_search(work, RandomSampler(labels, seed, under_cap)))
    tpe = TpeSampler(labels, seed, under_cap)
    ctx.run(pair, "tpe", seed, lambda work: depth_search(work, tpe, tpe.learn))
    ctx.run(pair, "uniform", seed, lambda work: _uniform_depth(settings, sampled, cap, budget, images, work))


def _uniform_depth(settings: dict, sampled: dict, cap: int, budget: int, images: int, work: Path) -> Outcome:
    """The same depth in every stage, with the parameter count closest to the found net's, for the whole budget."""
    from strategies.sampled.settings import parse_sampled_settings

    stages = len(settings["widths"])
    deepest = 2 * max(high for _, high in sampled["depth_ranges"])
    uniform = parse_sampled_settings({**sampled, "depth_ranges": [[1, deepest]] * stages})
    info = dataset_info(settings["dataset"], settings.get("data_dir", "data"))
    choices = uniform.choices(info.num_classes, info.in_channels)
    labels = [label for label, _ in choices.choice_labels()]
    size = input_size(uniform.paired())
    costs = {depth: measure_cost(choices.to_spec({label: depth for label in labels}), size)
             for depth in range(1, deepest + 1)}
    depth = min(costs, key=lambda d: abs(costs[d].params - cap))
    epochs = epochs_for_budget(budget, costs[depth].flops, images)
    method_settings = {**sampled["method_settings"], "epochs": epochs}
    result = train_sample({**sampled, "depth_ranges": [[1, deepest]] * stages, "method_settings": method_settings},
                          {label: depth for label in labels}, work)
    return outcome_of(result, epochs=epochs, depths=[depth] * stages)


def train_sample(sampled: dict[str, Any], sample: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """One network of a resnas space trained by the built-in tuners' trial (the paired method's recipe)."""
    from strategies.sampled.trial import run_sampled_trial

    out_dir.mkdir(parents=True, exist_ok=True)
    return run_sampled_trial({"method": "sampled", "settings": sampled, "sample": sample}, out_dir, QuietReporter())


class RandomSampler:
    """NNI's Random tuner over choice labels (each label uniform, seeded; a sample drawn before is drawn again, as
    NNI's deduplication does: retraining it with the same seed would only repeat its result), refusing samples
    `fits` rejects; None once nothing new fits."""

    def __init__(self, space: dict[str, dict[str, Any]], seed: int, fits=lambda sample: True):
        self.space, self.rng, self.fits, self.seen = space, random.Random(seed), fits, set()

    def __call__(self, index: int) -> dict[str, Any] | None:
        for _ in range(PROPOSAL_ATTEMPTS):
            sample = {label: self.rng.choice(entry["_value"]) for label, entry in self.space.items()}
            key = tuple(sample.items())
            if key not in self.seen and self.fits(sample):
                self.seen.add(key)
                return sample
        return None


class TpeSampler:
    """NNI's TPE tuner in-process; a sample over the cap is answered with accuracy 0 (not trained, costs nothing),
    so TPE learns to avoid the region instead of proposing it again."""

    def __init__(self, space: dict[str, dict[str, Any]], seed: int, fits=lambda sample: True):
        from nni.algorithms.hpo.tpe_tuner import TpeTuner

        self.tuner = TpeTuner(optimize_mode="maximize", seed=seed)
        self.tuner.update_search_space(space)
        self.fits, self.next_id, self.ids = fits, 0, {}

    def __call__(self, index: int) -> dict[str, Any] | None:
        import nni

        for _ in range(PROPOSAL_ATTEMPTS):
            parameter_id, self.next_id = self.next_id, self.next_id + 1
            try:
                sample = self.tuner.generate_parameters(parameter_id)
            except nni.NoMoreTrialError:  # TPE deduplicates: a small space can be used up
                return None
            if self.fits(sample):
                self.ids[index] = parameter_id
                return sample
            self.tuner.receive_trial_result(parameter_id, sample, 0.0)
        return None

    def learn(self, index: int, sample: dict[str, Any], val_accuracy: float) -> None:
        self.tuner.receive_trial_result(self.ids[index], sample, val_accuracy)


# ---- NASH ----------------------------------------------------------------------------------------------------------
def nash_pair(ctx: Context, seed: int) -> None:
    from strategies.hill_climbing.settings import HillClimbingSettings
    from strategies.hill_climbing.trial import job_optim, start_spec

    pair, settings = "nash", ctx.preset.pair_settings("hill_climbing", seed)
    method = ctx.run(pair, "hill_climbing", seed, lambda work: searched("hill_climbing", work, settings))
    ctx.run(pair, "random_walk", seed,
            lambda work: searched("hill_climbing", work, {**settings, "mode": "random_walk"}))
    if method is None:
        return
    parsed = parse_settings(HillClimbingSettings, settings, "benchmark nash")
    ctx.run(pair, "start_net", seed, lambda work: whole_budget(
        start_spec(parsed), parsed, job_optim(parsed, "start"), ctx.budget(method), images_per_epoch(settings)))


# ---- ResBuilder ----------------------------------------------------------------------------------------------------
def resbuilder_pair(ctx: Context, seed: int) -> None:
    from strategies.layer_pruning.settings import LayerPruningSettings
    from strategies.layer_pruning.trial import start_spec
    from trainers import OptimConfig

    pair, settings = "resbuilder", ctx.preset.pair_settings("layer_pruning", seed)
    method = ctx.run(pair, "layer_pruning", seed, lambda work: searched("layer_pruning", work, settings))
    ctx.run(pair, "morphnet_only", seed,
            lambda work: searched("layer_pruning", work, {**settings, "morphnet_only": True}))
    if method is None:
        return
    parsed = parse_settings(LayerPruningSettings, settings, "benchmark resbuilder")
    # the No Reg RI recipe: Adam, the extra L2 on kernels only, constant lr, variant_epochs, from random init
    optim = OptimConfig(optimizer="adam", lr=parsed.lr, weight_decay=parsed.weight_decay, weight_decay_on="kernels",
                        schedule="none")
    budget, images, start = ctx.budget(method), images_per_epoch(settings), start_spec(parsed)
    size = input_size(parsed)
    edits = parsed.n_insertions * parsed.n_morphnet  # as many edits as the search makes insertions
    sampler = ResBuilderSampler(start, seed, edits, parsed.zeta, size)

    def random_edits(work: Path) -> Outcome:
        best, trials = budget_limited_search(
            sampler, lambda spec_box, index: train_and_test(spec_box["spec"], parsed, optim, parsed.variant_epochs),
            lambda spec_box: training_flops(measure_cost(spec_box["spec"], size).flops, parsed.variant_epochs * images),
            budget, ctx.preset.max_trials)
        facts = search_facts(best, trials, budget)
        facts["chosen_sample"] = best.result["architecture"]  # the sample is a spec: its description is JSON
        return outcome_of(best.result, **facts, zeta=parsed.zeta)

    ctx.run(pair, "random", seed, random_edits)
    ctx.run(pair, "start_net", seed, lambda work: whole_budget(start, parsed, optim, budget, images))


class ResBuilderSampler:
    """Random ResBuilder architectures within the FLOP budget: from the start net, up to `edits` steps that each
    insert a block (the search's own random insertion) or remove a random removable block; then, as the search's
    MorphNet step ends each routine, the widths scaled by the largest uniform factor that keeps FLOPs <= zeta
    (MorphNet's width step with every channel alive: the allocation is not learned). Each architecture once."""

    def __init__(self, start, seed: int, edits: int, zeta: float, size: tuple[int, int, int]):
        self.start, self.rng, self.edits, self.zeta, self.size = start, random.Random(seed), edits, zeta, size
        self.seen: set[str] = set()

    def __call__(self, index: int) -> dict[str, Any] | None:
        for _ in range(PROPOSAL_ATTEMPTS):
            spec = self.start
            for _ in range(self.rng.randint(0, self.edits)):
                removable = [(s, b) for s, b, block in spec.iter_blocks() if block.residual and not block.projection]
                if removable and self.rng.random() < 0.5:
                    stage, position = self.rng.choice(removable)
                    blocks = spec.stages[stage - 1].blocks
                    spec = spec.replace_blocks(stage, blocks[:position] + blocks[position + 1:])
                else:  # the state dict only carries shapes here: the sampled net trains from scratch
                    spec = insert_random_block(spec, _fresh_state(spec), self.rng)[0]
            if spec.to_json() in self.seen:  # before the width step: it costs ~0.2 s, the draw milliseconds
                continue
            self.seen.add(spec.to_json())
            try:  # BN scales of 1 (no zero-init): every channel alive, so omega scales all widths alike
                return {"spec": morphnet_width_step(spec, _fresh_state(spec), self.size, self.zeta, threshold=0.5)[0]}
            except ValueError:  # even width 1 everywhere passes zeta
                continue
        return None


def _fresh_state(spec) -> dict[str, Any]:
    from search_spaces.builder import build_model

    return build_model(spec, zero_init_last=False).state_dict()

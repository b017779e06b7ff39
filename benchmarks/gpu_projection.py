"""GPU-hours of each paper's headline run, projected from gpu_check.py's measured epochs, beside what the paper says.

One GPU, jobs one after another (GPU-hours, not wall hours: a config's trialConcurrency divides the wall time,
not this). Epoch counts and job counts come from the config's settings as the tuners lay the jobs out; every
assumption a projection makes about sizes the search reaches is in its "assumptions".
"""

from __future__ import annotations

from typing import Any

# ---- what the papers state (quoted from /work/shared/papers/*.txt; None where the text has no number) -------
# search_scope_proxylessnas.txt: "The search training for PResNet-50-f consumes about longer than PResNet-50-s on
# a GeForce RTX 2080 Ti." The factor is lost from the text, and no absolute search or retrain time is given.
PROXYLESS_STATED_GPU_HOURS: float | None = None
PROXYLESS_STATED_F_OVER_S_SEARCH: float | None = None  # the lost factor of the sentence above
# nash_hill_climbing.txt (abstract): "on CIFAR-10, our method designs and trains networks with an error rate below
# 6% in only 12 hours on a single GPU" (Table 2's n_steps = 5 run; "experiments ... nvidia titan gpus").
NASH_STATED_GPU_HOURS: float | None = 12.0
# resbuilder.txt states no run time, only the machine: "a Dell Precision 7920 workstation with a Dual Intel Xeon
# Gold 6248R 3.0GHz and three Nvidia Quadro P 6000 graphic units with 24GB VRAM each."
RESBUILDER_STATED_GPU_HOURS: float | None = None
# stagewise_nas.txt: "enabling the proposed method to run in a few hours on a single GPU" (no number), and Table
# V's row "Ours (Res. modules) | 11 | 1 | 1.7 | 94.27": 11 models evaluated on 1 GPU (GTX 1080 Ti).
STAGEWISE_STATED_GPU_HOURS: float | None = None
STAGEWISE_STATED_MODELS = 11


def _hours(seconds: float) -> float:
    return round(seconds / 3600, 3)


def _seconds(jobs: dict[str, dict], name: str) -> float:
    """A job's projected seconds per CIFAR-10 epoch; KeyError (reported as the projection's error) if it failed."""
    job = jobs.get(name) or {}
    if "epoch_seconds" not in job:
        raise KeyError(f"job {name} has no measurement ({job.get('error') or job.get('skipped') or 'not run'})")
    return job["epoch_seconds"]


def _versus(hours: float, stated: float | None) -> float | None:
    return round(hours / stated, 3) if stated else None


def proxyless(jobs: dict[str, dict], settings) -> dict[str, Any]:
    """Table I: the plain ResNet-50 retrained, and for scopes s, m, l, f a search then a retrain of the found path."""
    retrain, ceiling = _seconds(jobs, "proxyless_retrain_plain"), _seconds(jobs, "proxyless_retrain_costliest")
    rows = {"plain": settings.retrain_epochs * retrain}
    upper = dict(rows)
    for scope in ("s", "m", "l", "f"):
        search = settings.search_epochs * _seconds(jobs, f"proxyless_search_{scope}")
        rows[scope] = search + settings.retrain_epochs * retrain
        upper[scope] = search + settings.retrain_epochs * ceiling
    total = sum(rows.values())
    return {
        "gpu_hours": _hours(total),
        "gpu_hours_upper": _hours(sum(upper.values())),
        "rows_gpu_hours": {row: _hours(seconds) for row, seconds in rows.items()},
        "search_f_over_s": round(_seconds(jobs, "proxyless_search_f") / _seconds(jobs, "proxyless_search_s"), 3),
        "stated_gpu_hours": PROXYLESS_STATED_GPU_HOURS,
        "stated_search_f_over_s": PROXYLESS_STATED_F_OVER_S_SEARCH,
        "measured_over_stated": _versus(_hours(total), PROXYLESS_STATED_GPU_HOURS),
        "epochs": {"search": settings.search_epochs, "retrain": settings.retrain_epochs},
        "assumptions": "every found path retrains at the plain ResNet-50's speed (gpu_hours) or at scope f's "
                       "costliest path, all 5x5 + Mish (gpu_hours_upper); no early search exit",
    }


def nash(jobs: dict[str, dict], settings) -> dict[str, Any]:
    """Table 2's run: pretrain the start net, n_steps x n_neighbours neighbours, the final training."""
    start, first, last = (_seconds(jobs, f"nash_{name}") for name in ("start", "child_first", "child_last"))
    neighbours = settings.n_steps * settings.n_neighbours * settings.epochs_neighbour
    final_share = 1 / (1 - settings.val_fraction) if settings.final_on_train_and_val else 1.0
    seconds = {
        "pretrain": settings.pretrain_epochs * start,
        "neighbours": neighbours * (first + last) / 2,  # the mean over steps of a linear growth first -> last
        "final": settings.epochs_final * last * final_share,
    }
    total = sum(seconds.values())
    return {
        "gpu_hours": _hours(total),
        "parts_gpu_hours": {part: _hours(value) for part, value in seconds.items()},
        "stated_gpu_hours": NASH_STATED_GPU_HOURS,
        "measured_over_stated": _versus(_hours(total), NASH_STATED_GPU_HOURS),
        "epochs": settings.pretrain_epochs + neighbours + settings.epochs_final,
        "assumptions": "the neighbours' epoch cost grows linearly over the steps from the first step's child to "
                       "the last step's (the path where every step's first child wins, the tuner's seeds); the "
                       "retrained parent costs as a child; the final net trains at the last child's speed, on "
                       "train + val when final_on_train_and_val",
    }


def resbuilder(jobs: dict[str, dict], settings) -> dict[str, Any]:
    """The CIFAR-10 run from RB-0Net: every pipeline step's With Reg training and its No Reg RI and WI trainings."""
    with_reg, no_reg = _seconds(jobs, "resbuilder_with_reg"), _seconds(jobs, "resbuilder_no_reg")
    steps = settings.n_morphnet * (settings.insertions_per_routine + 1) + 1  # step 0 is the start net
    seconds = {"with_reg": steps * settings.epochs * with_reg, "no_reg": steps * 2 * settings.variant_epochs * no_reg}
    total = sum(seconds.values())
    return {
        "gpu_hours": _hours(total),
        "parts_gpu_hours": {part: _hours(value) for part, value in seconds.items()},
        "pipeline_steps": steps,
        "stated_gpu_hours": RESBUILDER_STATED_GPU_HOURS,
        "measured_over_stated": _versus(_hours(total), RESBUILDER_STATED_GPU_HOURS),
        "assumptions": "every step trains a net of the measured size (RB-0Net + n_insertions blocks after a MorphNet "
                       "step: about zeta FLOPs); the nets before the first MorphNet step are smaller",
    }


def stagewise(jobs: dict[str, dict], settings) -> dict[str, Any]:
    """The CIFAR-10 run from scratch, on the path where one stage grows by delta per iteration: the start net,
    per iteration a temporary net (every stage + delta) and a grown net (2 x iterations + 1 = the paper's 11
    models), and with extend: every each grown net's extra epochs. An epoch's seconds are interpolated linearly in
    the number of blocks between the start net and the deepest net (a CIFAR ResNet's blocks all cost the same)."""
    start, deepest = jobs["stagewise_start"], jobs["stagewise_deepest"]
    t_start, t_deep = _seconds(jobs, "stagewise_start"), _seconds(jobs, "stagewise_deepest")
    per_block = (t_deep - t_start) / max(1, deepest["blocks"] - start["blocks"])

    def epoch_seconds(blocks: int) -> float:
        return t_start + per_block * (blocks - start["blocks"])

    stages = len(settings.start_depths)
    current = sum(settings.start_depths)
    seconds = {"candidates": settings.epochs * epoch_seconds(current), "extensions": 0.0}
    models = 1
    for _ in range(settings.iterations):
        seconds["candidates"] += settings.epochs * epoch_seconds(current + settings.delta * stages)  # temporary
        current += settings.delta  # one stage grows
        seconds["candidates"] += settings.epochs * epoch_seconds(current)  # grown
        models += 2
        if settings.extend == "every":
            seconds["extensions"] += settings.extra_epochs * epoch_seconds(current)
    if settings.extend != "every":
        seconds["extensions"] = settings.extra_epochs * epoch_seconds(current)
    total = sum(seconds.values())
    return {
        "gpu_hours": _hours(total),
        "parts_gpu_hours": {part: _hours(value) for part, value in seconds.items()},
        "models": models,
        "stated_models": STAGEWISE_STATED_MODELS,
        "stated_gpu_hours": STAGEWISE_STATED_GPU_HOURS,
        "measured_over_stated": _versus(_hours(total), STAGEWISE_STATED_GPU_HOURS),
        "assumptions": "one stage grows per iteration (11 models, as Table V counts); an epoch's cost is linear in "
                       "the blocks between the two measured depths",
    }


PROJECTIONS = {"proxyless_table1": proxyless, "nash_table2": nash, "resbuilder_cifar10": resbuilder,
               "stagewise_cifar10": stagewise}

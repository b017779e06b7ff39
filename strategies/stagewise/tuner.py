"""StagewiseTuner: stage-wise depth search (Jordao et al.) as an NNI customized tuner.

    [donor]             with train_donor: train cifar_resnet(donor_depths); every candidate starts from it
    start               the start net (start_depths), trained and scored: the current net
    iter{k}/temporary   the current net with every stage that can grow grown by delta, trained and scored
    iter{k}/grown       the current net with the stages whose temporary score beat the current net's grown:
                        trained and scored, it becomes the current net and its scores the baseline (when every
                        stage grows it is the temporary net, already trained with the same seed: no new job)
    iter{k}/extended    with extend: every, the grown net of iteration k trained extra_epochs more and tested
    final               the last current net trained extra_epochs more (or its extended job reused), tested
                        and exported; the start net tested beside it (start_default)

A candidate's trial reports one score per stage (strategies.stagewise.importance); the tuner decides growth.
Since iter{k+1}/temporary only needs the depths of iter{k}/grown, not its training, the two train side by side
(as do start and iter1/temporary): two trial slots halve the search's wall time. The search ends after
`iterations` iterations, or when no stage grows (the authors' code then retrains the same net; we stop).

With latency_table and latency_target_ms, a stage can grow only when the current net with that stage grown stays
within the target (predicted from the JSON table, no torch); when the temporary net with every such stage grown
is over it, the stage whose growth costs the most latency is left out, until it fits. The grown net grows a subset
of the temporary net's stages, so it fits too: no candidate over the target is trained.
"""

from __future__ import annotations

import logging
from typing import Any

from search_spaces.spec import ArchSpec
from trainers.datasets import dataset_entry

from ..data import input_size
from ..latency_budget import LatencyBudget
from ..multi_trial import MultiTrialTuner
from ..multi_trial.state import DONE, ENDED, FAILED
from .plot import STAGEWISE_FIGURE
from .settings import parse_stagewise_args

logger = logging.getLogger(__name__)
DONOR, START, FINAL = "donor", "start", "final"


def iteration_key(iteration: int, role: str) -> str:
    return f"iter{iteration}/{role}"


def grown_stages(current_scores: list[float], temporary_scores: list[float], can_grow: list[bool]) -> list[bool]:
    """The paper's rule: a stage grows when its score in the temporary net is higher than in the current net."""
    return [able and temporary > current
            for able, current, temporary in zip(can_grow, current_scores, temporary_scores)]


class StagewiseTuner(MultiTrialTuner):
    method = "stagewise"
    figure = STAGEWISE_FIGURE

    def __init__(self, state_dir: str | None = None, **class_args: Any):
        super().__init__(parse_stagewise_args(class_args), state_dir)

    # ---- the plan --------------------------------------------------------------------------------------------
    def _current_record(self) -> dict[str, Any] | None:
        """The iteration whose grown net is the current net; None while the start net is."""
        return next((record for record in self.state["iterations"]
                     if record.get("grown_job") == self.state["current"]), None)

    @property
    def current_depths(self) -> list[int]:
        record = self._current_record()
        return list(record["depths"]) if record else list(self.settings.start_depths)

    def can_grow(self, depths: list[int]) -> list[bool]:
        """Stages that may grow by delta: within the donor's depth and, alone, within the latency budget."""
        limits = self.state["max_depths"] or [None] * len(depths)
        able = [limit is None or depth + self.settings.delta <= limit for depth, limit in zip(depths, limits)]
        if self._budget is None:
            return able
        return [ok and self._fits(self._grown(depths, [i == stage for i in range(len(depths))]))
                for stage, ok in enumerate(able)]

    @property
    def _budget(self) -> LatencyBudget | None:
        return self.settings.latency_budget(input_size(self.settings))

    def _spec(self, depths: list[int]) -> ArchSpec:
        info = dataset_entry(self.settings.dataset).info  # the registry's facts: no data read, no torch
        return self.settings.network(tuple(depths), info.num_classes, info.in_channels)

    def _latency(self, depths: list[int]) -> float:
        return self._budget.predict(self._spec(depths)).total_ms

    def _fits(self, depths: list[int]) -> bool:
        return self._latency(depths) <= self._budget.target_ms

    def _grown(self, depths: list[int], grow: list[bool]) -> list[int]:
        return [depth + self.settings.delta * grows for depth, grows in zip(depths, grow)]

    def _candidate(self, key: str, depths: list[int], iteration: int, role: str) -> dict[str, Any]:
        donor = self.checkpoint(DONOR) if self.settings.train_donor else self.settings.donor
        return {"key": key, "params": {"kind": "candidate", "role": role, "iteration": iteration,
                                       "depths": list(depths), "epochs": self.settings.epochs, "donor": donor,
                                       "settings": self.state["settings"]}}

    def _temporary(self, iteration: int, depths: list[int]) -> dict[str, Any]:
        grow = self.can_grow(depths)
        if self._budget is not None:  # leave out the costliest growth until the temporary net fits
            while any(grow) and not self._fits(self._grown(depths, grow)):
                costs = {stage: self._latency(self._grown(depths, [i == stage for i in range(len(depths))]))
                         for stage, grows in enumerate(grow) if grows}
                grow[max(costs, key=costs.get)] = False
        temporary = self._grown(depths, grow)
        return self._candidate(iteration_key(iteration, "temporary"), temporary, iteration, "temporary")

    def first_jobs(self) -> list[dict[str, Any]]:
        limits = self.settings.max_depths
        self.state.update(max_depths=list(limits) if limits else None, current=START, decided=0, iterations=[],
                          search_over=False, stop_reason=None)
        if self.settings.train_donor:
            donor_depths = list(self.settings.donor_depths)
            return [{"key": DONOR, "params": {"kind": "candidate", "role": DONOR, "iteration": 0,
                                              "depths": donor_depths, "epochs": self.settings.donor_epochs,
                                              "donor": None, "settings": self.state["settings"]}}]
        return self._opening()

    def _opening(self) -> list[dict[str, Any]]:
        start = list(self.settings.start_depths)
        jobs = [self._candidate(START, start, 0, "start")]
        if any(self.can_grow(start)):
            jobs.append(self._temporary(1, start))
        return jobs

    def priority(self, key: str) -> int:
        """The search's chain (candidates) before the side jobs that only report (extended)."""
        return 1 if key.endswith("/extended") else 0

    def next_jobs(self) -> list[dict[str, Any]]:
        if self.settings.train_donor and START not in self.jobs:
            donor = self.jobs[DONOR]["status"]
            if donor == FAILED:
                self.finish("the donor's training failed; see its log in the dashboard and rerun")
            return self._opening() if donor == DONE else []
        jobs = self._extensions()
        return jobs + (self._conclude() if self.state["search_over"] else self._decide())

    def _end_search(self, reason: str) -> None:
        self.state.update(search_over=True, stop_reason=reason)
        logger.info("stage-wise search over: %s", reason)
        self.draw()

    def _decide(self) -> list[dict[str, Any]]:
        """Iteration k = decided + 1 once the current net and iteration k's temporary net are trained."""
        current = self.jobs[self.state["current"]]
        if current["status"] == FAILED:
            if self.state["current"] == START:
                self.finish("the start net's trial failed; see its log in the dashboard and rerun")
                return []
            failed = self.state["current"]
            self.state["current"] = self.state["iterations"][-1]["current"]  # the last net that trained
            self._end_search(f"{failed} failed; ending at the net before it")
            return self._conclude()
        iteration = self.state["decided"] + 1
        if current["status"] != DONE:
            return []
        if iteration > self.settings.iterations:
            self._end_search(f"{self.settings.iterations} iterations done")
            return self._conclude()
        current_depths = self.current_depths
        if not any(self.can_grow(current_depths)):
            within = " or the latency budget" if self._budget is not None else ""
            self._end_search(f"no stage can grow past the donor's depth{within}")
            return self._conclude()
        temporary_key = iteration_key(iteration, "temporary")
        temporary = self.jobs[temporary_key]
        if temporary["status"] not in ENDED:
            return []
        if temporary["status"] == FAILED:
            self._end_search(f"{temporary_key} failed; no growth can be decided")
            return self._conclude()
        baseline, scores = current["result"]["stage_scores"], temporary["result"]["stage_scores"]
        # Only the stages the temporary net grew were compared (the donor's depth, the latency budget).
        compared = [deeper > depth for deeper, depth in zip(temporary["params"]["depths"], current_depths)]
        grow = grown_stages(baseline, scores, compared)
        depths = self._grown(current_depths, grow)
        record = {"iteration": iteration, "current": self.state["current"], "current_depths": current_depths,
                  "current_scores": baseline, "temporary_depths": temporary["result"]["depths"],
                  "temporary_scores": scores, "grown": grow, "depths": depths}
        self.state["iterations"].append(record)
        self.state["decided"] = iteration
        if not any(grow):
            self._end_search(f"no stage's score rose in iteration {iteration}")
            return self._conclude()
        # Every stage grew: the grown net is the temporary net, trained with the same seed and data order.
        same_net = depths == temporary["result"]["depths"]
        grown_key = temporary_key if same_net else iteration_key(iteration, "grown")
        record["grown_job"] = grown_key
        self.state["current"] = grown_key
        jobs = [] if same_net else [self._candidate(grown_key, depths, iteration, "grown")]
        if iteration < self.settings.iterations and any(self.can_grow(depths)):
            jobs.append(self._temporary(iteration + 1, depths))
        self.draw()
        return jobs

    @property
    def extends_every_iteration(self) -> bool:
        return self.settings.extend == "every" and self.settings.extra_epochs > 0

    def _extensions(self) -> list[dict[str, Any]]:
        """extend: every: each grown net, once trained, gets its extra epochs beside the search."""
        if not self.extends_every_iteration:
            return []
        jobs = []
        for record in self.state["iterations"]:
            key, extended = record.get("grown_job"), iteration_key(record["iteration"], "extended")
            if key and self.result(key) and extended not in self.jobs:
                jobs.append(self._extension(extended, key, with_export=False))
        return jobs

    def _extension(self, key: str, source: str, with_export: bool) -> dict[str, Any]:
        return {"key": key, "params": {"kind": FINAL if with_export else "extended", "source": self.checkpoint(source),
                                       "source_job": source, "extra_epochs": self.settings.extra_epochs,
                                       "start": self.checkpoint(START), "settings": self.state["settings"]}}

    def _conclude(self) -> list[dict[str, Any]]:
        """After the search: the final job, then the summary once every job has ended."""
        if FINAL not in self.jobs:
            current = self.state["current"]
            if current != START and self.extends_every_iteration:  # its extended job trains the extra epochs
                extended_job = iteration_key(self._current_record()["iteration"], "extended")
                extended = self.jobs.get(extended_job)
                if extended is None or extended["status"] not in ENDED:
                    return []  # being added (this round) or training
                if extended["status"] == DONE:
                    final = self._extension(FINAL, extended_job, with_export=True)
                    final["params"]["extra_epochs"] = 0
                    return [final]
            return [self._extension(FINAL, current, with_export=True)]
        if self.all_ended() and not self.state["finished"]:
            if self.jobs[FINAL]["status"] == DONE:
                self.state["summary"] = {**self.result(FINAL), "iterations": self.iteration_rows()}
                self.finish()
            else:
                self.finish("the final test/export trial failed; see its log in the dashboard and rerun")
            self.draw()
        return []

    def iteration_rows(self) -> list[dict[str, Any]]:
        """Per iteration (0 = the start net): depths, validation accuracy, scores, params, MACs, extended test."""
        rows = []
        start = self.result(START)
        if start:
            rows.append({"iteration": 0, "job": START, **_facts(start)})
        for record in self.state["iterations"]:
            key = record.get("grown_job")
            result = self.result(key) if key else None
            row = {"iteration": record["iteration"], "job": key, "grown": record["grown"],
                   "temporary_scores": record["temporary_scores"], **(_facts(result) if result else {})}
            extended = self.result(iteration_key(record["iteration"], "extended"))
            if extended:
                row["extended_test_accuracy"] = extended["test_accuracy"]
            rows.append(row)
        return rows


def _facts(result: dict[str, Any]) -> dict[str, Any]:
    keys = ("depths", "val_accuracy", "stage_scores", "params", "macs", "latency_ms")
    return {key: result.get(key) for key in keys}

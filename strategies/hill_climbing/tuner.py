"""HillClimbingTuner: NASH (Elsken et al.) as an NNI customized tuner.

    start            pretrain the start net
    step k = 1..n    n_neighbours children of the current best, each = n_morphisms random network morphisms
                     + a short SGDR run; move to the best of {current best, children} by validation accuracy
    final            train the best net epochs_final more epochs, test it, export it to timm

The tuner draws the morphisms (on ArchSpec JSON, no weights); each child's trial applies them to the parent's
checkpoint and trains. Children that fail are skipped. The lineage (winner, morphisms, accuracy and params per
step) is kept in the state file and drawn as lineage.png beside it after every step.

The morphisms are drawn on specs alone (search_spaces.edits.morphism_ops imports no torch): NNI gives the
tuner process 10 s from its start to connect.
"""

from __future__ import annotations

import logging
import random
from typing import Any

from ..multi_trial import MultiTrialTuner
from ..multi_trial.job_files import SPEC_FILE
from ..multi_trial.state import DONE, FAILED
from .plot import LINEAGE
from .settings import parse_hill_climbing_args

logger = logging.getLogger(__name__)
START, FINAL = "start", "final"


def child_key(step: int, index: int) -> str:
    return f"step{step}/child{index}"


class HillClimbingTuner(MultiTrialTuner):
    method = "hill_climbing"
    figure = LINEAGE

    def __init__(self, state_dir: str | None = None, **class_args: Any):
        super().__init__(parse_hill_climbing_args(class_args), state_dir)

    def _job(self, key: str, kind: str, epochs: int, **params: Any) -> dict[str, Any]:
        return {"key": key, "params": {"kind": kind, "epochs": epochs, "settings": self.state["settings"], **params}}

    def first_jobs(self) -> list[dict[str, Any]]:
        self.state.update(step=0, best=None, lineage=[])
        return [self._job(START, START, self.settings.pretrain_epochs)]

    # ---- one step ---------------------------------------------------------------------------------------------
    def _children(self, step: int) -> list[dict[str, Any]]:
        from search_spaces.edits.morphism_ops import draw_morphisms
        from search_spaces.spec import ArchSpec

        parent = self.state["best"]
        parent_spec = ArchSpec.from_json((self.job_dir(parent) / SPEC_FILE).read_text())
        jobs = []
        for index in range(self.settings.n_neighbours):
            # Seeded per (seed, step, child): a resumed search draws the same children.
            rng = random.Random(f"{self.settings.seed}:{step}:{index}")
            morphisms, _ = draw_morphisms(parent_spec, self.settings.n_morphisms, rng, self.settings.morphisms)
            jobs.append(self._job(child_key(step, index), "child", self.settings.epochs_neighbour,
                                  parent=self.checkpoint(parent), parent_job=parent,
                                  morphisms=[morphism.to_dict() for morphism in morphisms]))
        return jobs

    def _lineage_entry(self, step: int, key: str, candidates: list[str]) -> dict[str, Any]:
        result = self.result(key) or {}
        return {
            "step": step,
            "winner": key,
            "parent": (self.jobs[key]["params"].get("parent_job")),
            "morphisms": self.jobs[key]["params"].get("morphisms", []),
            "val_accuracy": result.get("val_accuracy"),
            "params": result.get("params"),
            "flops": result.get("flops"),
            "candidates": [
                {"job": c, "status": self.jobs[c]["status"],
                 "val_accuracy": (self.result(c) or {}).get("val_accuracy"), "params": (self.result(c) or {}).get("params")}
                for c in candidates
            ],
        }

    def _climb(self, step: int) -> None:
        """Move to the best of the current best and this step's finished children (ties keep the parent)."""
        parent = self.state["best"]
        children = [child_key(step, i) for i in range(self.settings.n_neighbours)]
        best, best_accuracy = parent, self.result(parent)["val_accuracy"]
        for key in children:
            result = self.result(key)
            if result is not None and result["val_accuracy"] > best_accuracy:
                best, best_accuracy = key, result["val_accuracy"]
        failed = [key for key in children if self.jobs[key]["status"] == FAILED]
        if failed:
            logger.warning("step %d: %d children failed and were skipped: %s", step, len(failed), ", ".join(failed))
        self.state["best"] = best
        self.state["lineage"].append(self._lineage_entry(step, best, [parent, *children]))
        logger.info("step %d: best is %s (val accuracy %.4f)", step, best, best_accuracy)

    # ---- phases -----------------------------------------------------------------------------------------------
    def next_jobs(self) -> list[dict[str, Any]]:
        if not self.all_ended():  # a step moves on when every child has ended
            return []
        step = self.state["step"]
        if step == 0:
            if self.jobs[START]["status"] != DONE:
                self.finish("the start net's trial failed; see its log in the dashboard and rerun")
                return []
            self.state["best"] = START
            self.state["lineage"].append(self._lineage_entry(0, START, [START]))
        else:
            if step <= self.settings.n_steps:
                self._climb(step)
            else:
                self._end_search()
                return []
        self.draw()
        self.state["step"] = step + 1
        if step < self.settings.n_steps:
            return self._children(step + 1)
        best = self.state["best"]
        return [self._job(FINAL, FINAL, self.settings.epochs_final, parent=self.checkpoint(best), parent_job=best,
                          start=self.checkpoint(START))]

    def _end_search(self) -> None:
        if self.jobs[FINAL]["status"] != DONE:
            self.finish("the final training's trial failed; see its log in the dashboard and rerun")
            return
        self.state["summary"] = self.result(FINAL)
        self.finish()

"""HillClimbingTuner: NASH (Elsken et al.) as an NNI customized tuner.

    start            pretrain the start net (pretrain_epochs; a pretrained timm ResNet may take 0: only evaluated)
    step k = 1..n    hill_climbing (the paper's Algorithm 1): n_neighbours - 1 children of the current best,
                     each = n_morphisms random network morphisms + a short SGDR run, and the current best
                     itself trained the same epochs (job step{k}/parent, no morphism); move to the best of
                     these n_neighbours by their new validation accuracy (ties keep the parent).
                     random_walk (the paper's baseline without model selection): n_neighbours children, move to
                     one of them at random (seeded), never keep the parent.
    final            train the best net epochs_final more epochs (optionally on train + val), test it, export
                     it to timm; with ensemble_last = k, also test the ensemble of the winners of the last k steps

The tuner draws the morphisms (on ArchSpec JSON, no weights); each child's trial applies them to the parent's
checkpoint and trains. Children that fail are skipped; a failed retraining of the parent lets the parent
compete with its previous result. The lineage (winner, morphisms, accuracy and params per step) is kept in
the state file and drawn as lineage.png beside it after every step.

The morphisms are drawn on specs alone (search_spaces.edits.morphism_ops imports no torch): NNI gives the
tuner process 10 s from its start to connect. With latency_table and latency_target_ms, a child whose predicted
latency (strategies.latency_budget, from the JSON table) is over the target is drawn again, up to
LATENCY_DRAWS times with the child's own seeded generator; a child with no draw under the target is recorded as
failed ("refused") and never trained.
"""

from __future__ import annotations

import logging
import random
from typing import Any

from ..data import input_size
from ..multi_trial import MultiTrialTuner
from ..multi_trial.job_files import SPEC_FILE
from ..multi_trial.state import DONE, FAILED
from .plot import LINEAGE
from .settings import parse_hill_climbing_args

logger = logging.getLogger(__name__)
START, FINAL = "start", "final"
LATENCY_DRAWS = 20  # morphism draws per child before a child over the latency budget is given up


def child_key(step: int, index: int) -> str:
    return f"step{step}/child{index}"


def random_walk_choice(seed: int, step: int, children: list[str]) -> str:
    """The random walk's next net: uniform over the step's finished children, seeded per (seed, step) so a
    resumed search chooses alike; accuracy plays no part."""
    return random.Random(f"{seed}:{step}:walk").choice(children)


def _latency(result: dict[str, Any]) -> dict[str, Any]:
    """A job's predicted latency for the lineage, when its trial reported one (a search with a latency_table)."""
    return {"latency_ms": result["latency_ms"]} if "latency_ms" in result else {}


def parent_key(step: int) -> str:
    """The job that retrains the current best in a hill-climbing step (one of the step's n_neighbours)."""
    return f"step{step}/parent"


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
    @property
    def _retrains_parent(self) -> bool:
        return self.settings.mode == "hill_climbing"

    def _child_keys(self, step: int) -> list[str]:
        n_children = self.settings.n_neighbours - (1 if self._retrains_parent else 0)
        return [child_key(step, index) for index in range(n_children)]

    def _step_keys(self, step: int) -> list[str]:
        """The step's n_neighbours jobs: its children, and in hill_climbing the retrained parent last."""
        return self._child_keys(step) + ([parent_key(step)] if self._retrains_parent else [])

    def _step_jobs(self, step: int) -> list[dict[str, Any]]:
        from search_spaces.edits.morphism_ops import draw_morphisms
        from search_spaces.spec import ArchSpec

        parent = self.state["best"]
        parent_spec = ArchSpec.from_json((self.job_dir(parent) / SPEC_FILE).read_text())
        from_parent = {"parent": self.checkpoint(parent), "parent_job": parent}
        budget = self.settings.latency_budget(input_size(self.settings))
        jobs = []
        for index, key in enumerate(self._child_keys(step)):
            # Seeded per (seed, step, child): a resumed search draws the same children.
            rng = random.Random(f"{self.settings.seed}:{step}:{index}")
            refused, facts = None, {}
            for _ in range(LATENCY_DRAWS if budget is not None else 1):
                morphisms, child = draw_morphisms(parent_spec, self.settings.n_morphisms, rng, self.settings.morphisms)
                if budget is None:
                    break
                predicted = budget.predict(child).total_ms
                facts = {"predicted_latency_ms": round(predicted, 4)}
                refused = None if predicted <= budget.target_ms else (
                    f"no draw of {self.settings.n_morphisms} morphisms in {LATENCY_DRAWS} stayed within "
                    f"latency_target_ms {budget.target_ms:g} (the last: {predicted:.4g} ms)")
                if refused is None:
                    break
            job = self._job(key, "child", self.settings.epochs_neighbour, **from_parent, **facts,
                            morphisms=[morphism.to_dict() for morphism in morphisms])
            jobs.append({**job, "refused": refused} if refused else job)
        if self._retrains_parent:
            jobs.append(self._job(parent_key(step), "parent", self.settings.epochs_neighbour, **from_parent,
                                  morphisms=[]))
        return jobs

    def _candidate(self, key: str) -> dict[str, Any]:
        result = self.result(key) or {}
        return {"job": key, "status": self.jobs[key]["status"], "val_accuracy": result.get("val_accuracy"),
                "params": result.get("params"), **_latency(result),
                "retrained_parent": self.jobs[key]["params"].get("kind") == "parent"}

    def _lineage_entry(self, step: int, winner: str, parent: str | None, candidates: list[str]) -> dict[str, Any]:
        result = self.result(winner) or {}
        kept = parent is not None and winner not in self._child_keys(step)
        return {
            "step": step,
            "winner": winner,
            "parent": parent,  # the best net before this step
            "kept": kept,  # the step stayed at its parent (retrained, or its old result if that failed)
            "morphisms": [] if kept else self.jobs[winner]["params"].get("morphisms", []),
            "val_accuracy": result.get("val_accuracy"),
            "params": result.get("params"),
            "flops": result.get("flops"),
            **_latency(result),
            "candidates": [self._candidate(key) for key in candidates],
        }

    def _best_neighbour(self, step: int, parent: str) -> str:
        """The paper's selection: the best of the step's n_neighbours by their new validation accuracy; the
        retrained parent is one of them, and ties keep it. If its retraining failed, the parent competes with
        its previous result, so the step can still move or stay."""
        retrained = parent_key(step)
        if self.result(retrained) is not None:
            best = retrained
        else:
            logger.warning("step %d: retraining the parent %s failed; it competes with its previous val accuracy",
                           step, parent)
            best = parent
        best_accuracy = self.result(best)["val_accuracy"]
        for key in self._child_keys(step):
            result = self.result(key)
            if result is not None and result["val_accuracy"] > best_accuracy:
                best, best_accuracy = key, result["val_accuracy"]
        return best

    def _random_child(self, step: int, parent: str) -> str:
        """The paper's baseline without model selection: always a child, never the parent (unless all failed)."""
        finished = [key for key in self._child_keys(step) if self.result(key) is not None]
        if not finished:
            logger.warning("step %d: every child failed; the random walk stays at %s", step, parent)
            return parent
        return random_walk_choice(self.settings.seed, step, finished)

    def _climb(self, step: int) -> None:
        parent, keys = self.state["best"], self._step_keys(step)
        failed = [key for key in keys if self.jobs[key]["status"] == FAILED]
        if failed:
            logger.warning("step %d: %d jobs failed and were skipped: %s", step, len(failed), ", ".join(failed))
        best = self._best_neighbour(step, parent) if self._retrains_parent else self._random_child(step, parent)
        self.state["best"] = best
        self.state["lineage"].append(self._lineage_entry(step, best, parent, keys))
        logger.info("step %d: best is %s (val accuracy %.4f)", step, best, self.result(best)["val_accuracy"])

    # ---- phases -----------------------------------------------------------------------------------------------
    def next_jobs(self) -> list[dict[str, Any]]:
        if not self.all_ended():  # a step moves on when every job of it has ended
            return []
        step = self.state["step"]
        if step == 0:
            if self.jobs[START]["status"] != DONE:
                self.finish("the start net's trial failed; see its log in the dashboard and rerun")
                return []
            self.state["best"] = START
            self.state["lineage"].append(self._lineage_entry(0, START, None, [START]))
        else:
            if step <= self.settings.n_steps:
                self._climb(step)
            else:
                self._end_search()
                return []
        self.draw()
        self.state["step"] = step + 1
        if step < self.settings.n_steps:
            return self._step_jobs(step + 1)
        return [self._final_job()]

    def _ensemble_members(self) -> list[str]:
        """The winners of the last ensemble_last steps (step 0, the start net, is not a step), each once."""
        if self.settings.ensemble_last == 0:
            return []
        winners = [entry["winner"] for entry in self.state["lineage"] if entry["step"] >= 1]
        return list(dict.fromkeys(winners[-self.settings.ensemble_last:]))

    def _final_job(self) -> dict[str, Any]:
        best, members = self.state["best"], self._ensemble_members()
        # A pretrained start net's origin (the start job reported it) goes on the exported model's card.
        start_origin = (self.result(START) or {}).get("start_origin")
        return self._job(FINAL, FINAL, self.settings.epochs_final, parent=self.checkpoint(best), parent_job=best,
                         start=self.checkpoint(START), start_origin=start_origin,
                         ensemble=[self.checkpoint(key) for key in members], ensemble_jobs=members)

    def _end_search(self) -> None:
        if self.jobs[FINAL]["status"] != DONE:
            self.finish("the final training's trial failed; see its log in the dashboard and rerun")
            return
        self.state["summary"] = self.result(FINAL)
        self.finish()

"""LayerPruningTuner: ResBuilder (Burghoff et al.) "random in, greedy out" as an NNI customized tuner.

Pipeline step t = 0..T, T = n_morphnet * (n_insertions + 1); step 0 is the start net. Each morphing routine is
n_insertions steps that insert a random residual block, then one MorphNet width step. Every step's With Reg
trial (CE + LayerLasso + MorphNet + L2) first deletes the blocks LayerLasso drove below tau, then applies the
step's edit to the previous step's trained net, then trains; it decides the next architecture. The same
architecture is also trained without the extra terms, from random init (No Reg RI) and from the With Reg
weights (No Reg WI), as separate trials running beside the search. At the end the best No Reg architecture
within the FLOP budget (validation accuracy) is tested and exported. With latency_table and latency_target_ms the
latency target replaces zeta: MorphNet's width step scales to the predicted latency, and the pick is among the
architectures whose reported `latency_ms` is within the target. Insertions are drawn inside the trials and are
not held to the target: the next MorphNet step brings the widths back within it.
"""

from __future__ import annotations

import logging
from typing import Any

from ..multi_trial import MultiTrialTuner
from ..multi_trial.state import DONE, FAILED
from .plot import FIG5
from .settings import parse_layer_pruning_args

logger = logging.getLogger(__name__)
FINAL = "final"
NO_REG_VARIANTS = ("no_reg_ri", "no_reg_wi")


def job_key(step: int, variant: str) -> str:
    return f"step{step}/{variant}"


def step_edit(step: int, insertions: int) -> str:
    """none (the start net), insert or morphnet: n_insertions insertions, then one MorphNet step, repeated."""
    if step == 0:
        return "none"
    return "insert" if (step - 1) % (insertions + 1) < insertions else "morphnet"


class LayerPruningTuner(MultiTrialTuner):
    method = "layer_pruning"
    figure = FIG5

    def __init__(self, state_dir: str | None = None, **class_args: Any):
        super().__init__(parse_layer_pruning_args(class_args), state_dir)

    @property
    def last_step(self) -> int:
        return self.settings.n_morphnet * (self.settings.insertions_per_routine + 1)

    def _job(self, step: int, variant: str, epochs: int, **params: Any) -> dict[str, Any]:
        return {"key": job_key(step, variant), "params": {
            "kind": variant, "step": step, "epochs": epochs, "settings": self.state["settings"], **params}}

    def _with_reg(self, step: int) -> dict[str, Any]:
        parent = self.checkpoint(job_key(step - 1, "with_reg")) if step > 0 else None
        edit = step_edit(step, self.settings.insertions_per_routine)
        # The insertion's place is drawn in the trial from this seed: same seed, same place after a resume.
        return self._job(step, "with_reg", self.settings.epochs, parent=parent, edit=edit,
                         edit_seed=self.settings.seed * 1000 + step)

    def priority(self, key: str) -> int:
        """The With Reg chain is the search's critical path; the No Reg trainings fill the other slots."""
        return 0 if key.endswith("with_reg") else 1

    def first_jobs(self) -> list[dict[str, Any]]:
        self.state.update(step=0, processed=-1)
        return [self._with_reg(0)]

    def next_jobs(self) -> list[dict[str, Any]]:
        step = self.state["step"]
        with_reg = self.jobs[job_key(step, "with_reg")]
        new: list[dict[str, Any]] = []
        if with_reg["status"] in (DONE, FAILED) and self.state["processed"] < step:
            self.state["processed"] = step
            if with_reg["status"] == FAILED:
                # Later steps grow from this one; stop the pipeline here and finish with what exists.
                self.state["stopped_at"] = step
                logger.warning("step %d's With Reg trial failed; the pipeline ends at step %d", step, step - 1)
            else:
                if step < self.last_step:
                    self.state["step"] = step + 1
                    new.append(self._with_reg(step + 1))
                source = self.checkpoint(job_key(step, "with_reg"))
                new += [self._job(step, variant, self.settings.variant_epochs, source=source)
                        for variant in NO_REG_VARIANTS]
            self.draw()
        pipeline_over = self.state["processed"] == self.state["step"]
        if pipeline_over and not new and FINAL not in self.jobs and self.all_ended():
            final = self._final_job()
            return [final] if final else []
        if FINAL in self.jobs and self.jobs[FINAL]["status"] in (DONE, FAILED) and not self.state["finished"]:
            if self.jobs[FINAL]["status"] == DONE:
                self.state["summary"] = self.result(FINAL)
                self.finish()
            else:
                self.finish("the final test/export trial failed; see its log in the dashboard and rerun")
            self.draw()
        return new

    def _final_job(self) -> dict[str, Any] | None:
        """The best No Reg architecture by validation accuracy, among those within the budget: FLOPs within zeta,
        or with latency_target_ms the latency the trials reported within it."""
        candidates = [key for key in self.state["order"] if key.split("/")[-1] in NO_REG_VARIANTS and self.result(key)]
        if not candidates:
            self.finish("no No Reg trial succeeded; see the trials' logs in the dashboard and rerun")
            return None
        target = self.settings.latency_target_ms
        if target is None:
            within = [key for key in candidates if self.result(key)["flops"] <= self.settings.zeta]
            budget = f"the FLOP budget {self.settings.zeta:g}"
        else:
            within = [key for key in candidates if self.result(key).get("latency_ms", float("inf")) <= target]
            budget = f"the latency target {target:g} ms"
        if not within:
            logger.warning("no architecture met %s; taking the best overall", budget)
        best = max(within or candidates, key=lambda key: self.result(key)["val_accuracy"])
        self.state["best"] = best
        # A pretrained start net's origin (step 0 reported it) goes on the exported model's card.
        start_origin = (self.result(job_key(0, "with_reg")) or {}).get("start_origin")
        return {"key": FINAL, "params": {"kind": FINAL, "epochs": 0, "settings": self.state["settings"],
                                          "source": self.checkpoint(best), "source_job": best,
                                          "source_result": self.result(best), "start_origin": start_origin}}

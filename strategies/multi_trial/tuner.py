"""MultiTrialTuner: the machinery the hill-climbing and layer-pruning tuners share.

A search is a list of jobs (one NNI trial each), keyed by a stable name such as "step2/child3". The tuner keeps
every job's status and result in one JSON state file, rewritten atomically after every event, so that after
the manager is killed `nnictl resume ID` continues where it was: NNI hands finished trials back through
`import_data` (never `save_checkpoint`), and the state file restores what NNI does not know (the current best,
the lineage, which jobs were issued).

Jobs are identified by their key inside the trial parameters, never by NNI's parameter ids, which change on
resume. A job issued but not finished when the tuner restarts is issued again; trials are idempotent (a trial
whose result file exists reports it and exits), so a re-issued finished job costs seconds, not a retraining.

Subclasses decide; trials train:
    first_jobs()  -> the jobs that start the search
    next_jobs()   -> called after every event: jobs that can start now ([] if none); calls finish() when done
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable

import nni
from nni.tuner import Tuner

from trainers.atomic import atomic_write_text

from ..data import settings_match
from ..payload_guard import guard_dispatcher_payloads
from ..plotting import Figure
from ..reporting import decode_metric
from .job_files import MODEL_FILE, job_error, job_state
from .state import DONE, ENDED, FAILED, ISSUED, PENDING, STATE_FILE, load_state, search_folders

logger = logging.getLogger(__name__)
KILLED_TRIAL_RESTARTS = 1  # a job whose trial was killed (no error of its own) is issued once more


class MultiTrialTuner(Tuner):
    method: str = ""  # trial parameters carry it; strategies.trial picks the runner by it (methods.METHODS)
    figure: Figure | None = None  # drawn beside the job folders after every step; `resnas plot` redraws it

    def __init__(self, settings: Any, state_dir: str | Path | None = None):
        guard_dispatcher_payloads()  # before the dispatcher reads its first message from the manager
        self.settings = settings
        # The state file and job folders: the experiment's checkpoint folder, or its folder under artifact_dir
        # (every machine mounts it at the same path: remote trials read their parents there).
        self.artifact_root, self.state_dir = search_folders(getattr(settings, "artifact_dir", None), state_dir)
        self.work_dir = self.state_dir / self.method  # job folders: checkpoints, specs, result files
        self.state_path = self.state_dir / STATE_FILE
        saved = load_state(self.state_path)
        settings_json = json.loads(json.dumps(settings.to_dict()))  # tuples read back as lists
        # settings_match: a search saved before a setting was added still resumes while it keeps its default.
        if saved is not None and isinstance(saved.get("settings"), dict) and settings_match(saved["settings"], settings):
            self.state = saved
            self.state["settings"] = settings_json  # the keys added since, written out from now on
            for job in self.state["jobs"].values():
                if job["status"] == ISSUED:  # its trial died with the manager, or NNI re-runs it: issue again
                    job["status"] = PENDING
            logger.info("resuming %s from %s", self.method, self.state_path)
        else:
            if saved is not None:
                kept = self._set_aside_previous_search()
                logger.warning("tuner state %s belongs to other settings; starting the search over (the earlier "
                               "search is kept in %s)", self.state_path, kept)
            self.state = {"method": self.method, "settings": settings_json, "jobs": {}, "order": [],
                          "finished": False, "error": None, "summary": None}
            self.add_jobs(self.first_jobs())
        self._issued_ids: dict[int, str] = {}
        # NNI asks for as many trials as have just ended; a request the tuner cannot fill is not repeated, so
        # its parameter ids are kept ("credits") and used through NNI's st_callback once jobs become ready.
        self._credits: list[int] = []
        self._send_trial: Callable[[int, dict], None] | None = None
        self.save()

    def _set_aside_previous_search(self) -> Path:
        """Move an earlier search's state file and job folders out of the way, keeping them: a job folder with a
        result.json is reported as done by its trial, so a new search under the same job keys would reuse
        results computed under other settings."""
        number = 1
        while (aside := self.state_dir / f"{self.method}.previous-{number}").exists():
            number += 1
        aside.mkdir(parents=True)
        if self.work_dir.exists():
            self.work_dir.rename(aside / self.method)
        self.state_path.rename(aside / STATE_FILE)
        return aside

    # ---- to implement ---------------------------------------------------------------------------------------
    def first_jobs(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def next_jobs(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def priority(self, key: str) -> int:
        """Lower starts first when several jobs wait for a trial slot."""
        return 0

    # ---- jobs -------------------------------------------------------------------------------------------------
    @property
    def jobs(self) -> dict[str, dict[str, Any]]:
        return self.state["jobs"]

    def job_dir(self, key: str) -> Path:
        return self.work_dir / key

    def checkpoint(self, key: str) -> str:
        """The model.ckpt a job's trial writes: what the next jobs start from."""
        return str(self.job_dir(key) / MODEL_FILE)

    def add_jobs(self, jobs: list[dict[str, Any]]) -> None:
        """Each job: {"key": str, "params": dict}; params get the method, the key, the job folder and the artifact
        root the job paths are under (a worker that mounts it elsewhere swaps it: job_files.resolve_job_paths).
        A job with "refused": reason (a child over the latency budget) is recorded as failed with that reason and
        never issued: the step sees it like a failed trial."""
        for job in jobs:
            key = job["key"]
            if key in self.jobs:
                raise ValueError(f"job {key!r} exists already; job keys must be unique.")
            params = {"method": self.method, "job": key, "artifact_dir": str(self.artifact_root),
                      "out_dir": str(self.job_dir(key)), **job["params"]}
            self.jobs[key] = {"params": params, "status": PENDING, "result": None}
            if job.get("refused"):
                self.jobs[key].update(status=FAILED, error=job["refused"])
                logger.info("%s: %s is not trained: %s", self.method, key, job["refused"])
            self.state["order"].append(key)

    def result(self, key: str) -> dict[str, Any] | None:
        job = self.jobs.get(key)
        return job["result"] if job and job["status"] == DONE else None

    def finish(self, error: str | None = None) -> None:
        self.state["finished"] = True
        self.state["error"] = error
        if error:
            logger.error("%s search ended early: %s", self.method, error)

    def all_ended(self) -> bool:
        return all(job["status"] in ENDED for job in self.jobs.values())

    def _advance(self) -> None:
        """Give the subclass every chance to add jobs: after each event and before each request."""
        while not self.state["finished"]:
            jobs = self.next_jobs()
            if not jobs:
                break
            self.add_jobs(jobs)

    def save(self) -> None:
        atomic_write_text(self.state_path, json.dumps(self.state, indent=1, sort_keys=True))

    def draw(self) -> None:
        """The method's figure beside the job folders (matplotlib loads on the first draw, not at tuner start)."""
        if self.figure is None:
            return
        try:
            self.figure.draw(self.state, self.work_dir / self.figure.file_name)
        except Exception as error:  # noqa: BLE001 - a plot must never stop the search
            logger.warning("could not draw %s: %s", self.figure.file_name, error)

    def _after_event(self) -> None:
        """A job ended: let the subclass plan, persist, and start what became ready on slots NNI offered."""
        self._advance()
        self.save()
        self._spend_credits()

    # ---- NNI tuner interface ----------------------------------------------------------------------------------
    def update_search_space(self, search_space: dict) -> None:
        """The search is described by classArgs; an nnictl searchSpace is not used."""

    def _issue_next(self, parameter_id: int) -> dict[str, Any] | None:
        self._advance()
        for key in sorted(self.state["order"], key=self.priority):  # stable: same priority, first added first
            job = self.jobs[key]
            if job["status"] == PENDING:
                job["status"] = ISSUED
                self._issued_ids[parameter_id] = key
                self.save()
                logger.info("%s: issuing %s", self.method, key)
                return job["params"]
        return None

    def generate_parameters(self, parameter_id: int, **kwargs: Any) -> dict[str, Any]:
        params = self._issue_next(parameter_id)
        if params is None:  # waiting for running jobs (or done): NNI asks again when a trial ends
            raise nni.NoMoreTrialError("no job can start until the running ones end")
        return params

    def generate_multiple_parameters(self, parameter_id_list: list[int], **kwargs: Any) -> list[dict[str, Any]]:
        self._send_trial = kwargs.get("st_callback") or self._send_trial
        issued = []
        for index, parameter_id in enumerate(parameter_id_list):
            params = self._issue_next(parameter_id)
            if params is None:
                self._credits.extend(parameter_id_list[index:])
                break
            issued.append(params)
        return issued

    def _spend_credits(self) -> None:
        """Start jobs that became ready on the trial slots NNI offered earlier and will not offer again."""
        while self._credits and self._send_trial is not None:
            params = self._issue_next(self._credits[0])
            if params is None:
                return
            self._send_trial(self._credits.pop(0), params)

    def receive_trial_result(self, parameter_id: int, parameters: dict, value: Any, **kwargs: Any) -> None:
        if not isinstance(parameters, dict) and parameter_id in self._issued_ids:
            # NNI 3.0's dispatcher overwrites the parameters of the first trial of a request with '' when the
            # tuner has fewer trials than were requested (handle_request_trial_jobs); our own record is exact.
            parameters = self.jobs[self._issued_ids[parameter_id]]["params"]
        self._record(parameters, value)

    def import_data(self, data: list[dict]) -> None:
        """Finished trials handed back by NNI on `nnictl resume` (and recovered trials finishing later)."""
        for record in data:
            self._record(record.get("parameter"), record.get("value"))

    def trial_end(self, parameter_id: int, success: bool, **kwargs: Any) -> None:
        key = self._issued_ids.get(parameter_id)
        if key is None or success or self.jobs[key]["status"] in ENDED:
            return
        key = self._job_that_ended(key)
        job = self.jobs[key]
        error = job_error(self.job_dir(key))
        if error is None and job.get("restarts", 0) < KILLED_TRIAL_RESTARTS:
            # No exception of its own: the trial was killed (signal, out-of-memory killer, a cancel); NNI calls
            # that USER_CANCELED. Worth one more try, unlike an error that would only repeat.
            job["restarts"] = job.get("restarts", 0) + 1
            job["status"] = PENDING
            logger.warning("%s: the trial for %s was killed without an error of its own; issuing it once more",
                           self.method, key)
        else:
            job["status"] = FAILED
            job["error"] = error or (f"its trial was killed {job.get('restarts', 0) + 1} times without an error of "
                                     "its own (a signal or the out-of-memory killer?)")
            logger.warning("%s: %s failed (%s); skipping it", self.method, key, job["error"])
        self._after_event()

    def _job_that_ended(self, key: str) -> str:
        """The job whose trial just ended without success, `key` unless its folder says otherwise.

        NNI 3.0's local service can hand two trials started together each other's parameters (a trial gets the
        parameters of whichever request comes first) while it reports a trial's end with the ones it was created
        with: the end of the trial that ran job0 may come as job1's. When job `key` is still running (its lock is
        held), the job that ended is the one issued job whose trial took its lock and let go without a result.
        """
        if job_state(self.job_dir(key)) != "running":
            return key
        ended = [other for other in self.state["order"] if self.jobs[other]["status"] == ISSUED and other != key
                 and job_state(self.job_dir(other)) == "died"]
        if len(ended) == 1:
            logger.info("%s: the trial reported as %s's ran %s (NNI swapped their parameters)", self.method, key,
                        ended[0])
            return ended[0]
        return key

    def _record(self, parameters: Any, value: Any) -> None:
        value = decode_metric(value)
        key = parameters.get("job") if isinstance(parameters, dict) else None
        if key not in self.jobs or parameters.get("method") != self.method:
            logger.info("%s: ignoring a result for %r", self.method, key)
            return
        job = self.jobs[key]
        if job["status"] == DONE:
            return  # a duplicate (a re-issued job that had finished): the first result stands
        job["status"], job["result"] = DONE, value if isinstance(value, dict) else {"default": value}
        logger.info("%s: %s finished: %s", self.method, key, job["result"].get("default"))
        self._after_event()

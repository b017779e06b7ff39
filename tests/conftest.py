"""Fixtures shared by several test files, and what keeps pytest-xdist workers (pyproject addopts: -n) apart."""

import functools
import os

import pytest
import torch

# pytest-xdist names its workers gw0, gw1, ...; unset when the suite runs in one process (-p no:xdist, -n 0).
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
WORKER_INDEX = int(WORKER.removeprefix("gw") or 0)
PORT_STRIDE = 1000  # tests pick their ports in 8700..8999 (managers) and 18600..18999 (stubs): ranges never overlap

if WORKER:
    # Workers share the CI machine's 2 cores: torch threads in one worker (and the trials its managers start)
    # would only contend with the other workers' (OMP spins), so each uses one.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)


def worker_port(port: int) -> int:
    """`port` moved into this xdist worker's own range (gw0 and a serial run keep it; gwN adds N * 1000), so two
    workers' managers never pick the same port: a resume must get its experiment's port back, not a free one."""
    assert WORKER_INDEX < 10, "ports would reach the kernel's ephemeral range (32768..); run fewer workers"
    return port + PORT_STRIDE * WORKER_INDEX


def pytest_collection_modifyitems(config, items):
    """Under xdist the real-manager tests go first: each is minutes long, and started last one of them would
    keep one worker busy while the others have nothing left to do."""
    if WORKER:
        items.sort(key=lambda item: item.get_closest_marker("e2e") is None)  # stable: otherwise collection order


@pytest.fixture
def one_thread_and_seeded():
    """One thread (the 2-core CI machine runs other work beside), and the global RNG seeded: build_model draws
    from it, so the weights are the same whatever ran before."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def nni_home(tmp_path, monkeypatch):
    """Keep NNI's experiment manifest and logs out of ~/nni-experiments."""
    import nni.nas.experiment.experiment as nas_experiment
    from nni.tools.nnictl.config_utils import Experiments

    monkeypatch.setattr(nas_experiment, "Experiments", functools.partial(Experiments, home_dir=str(tmp_path)))
    return tmp_path

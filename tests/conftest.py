"""Fixtures shared by several test files."""

import functools

import pytest
import torch


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

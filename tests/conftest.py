"""Fixtures shared by several test files."""

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

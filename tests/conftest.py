"""Fixtures shared by several test modules."""

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One torch thread for the test, as the trainer sets (``torch_threads=1``): tests that
    drive learners directly would otherwise run, and round, with torch's default."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

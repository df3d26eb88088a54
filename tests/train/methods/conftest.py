"""Fixtures of the methods' tests."""

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny matrices and batches: with several intra-op threads, start-up costs dominate (and
    # more so on a busy 2-core machine).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

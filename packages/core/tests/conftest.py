import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    # Bit-identical comparisons and speed: one intra-op thread for the tests.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

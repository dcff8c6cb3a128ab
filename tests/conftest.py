import os

import pytest
import torch

# Two workers share two cores: one thread each keeps them from fighting.
torch.set_num_threads(int(os.environ.get("ATTN2D_TEST_THREADS", "1")))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _threads():
    """A test that changes torch's thread count (a run's --threads) leaves it as it was:
    kernels size their buffers by it, so a later memory measurement would see it."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)

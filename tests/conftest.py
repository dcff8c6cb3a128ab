import os

import pytest
import torch

# Two workers share two cores: one thread each keeps them from fighting.
torch.set_num_threads(int(os.environ.get("ATTN2D_TEST_THREADS", "1")))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)

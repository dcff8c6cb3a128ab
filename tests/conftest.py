"""What every test shares: one thread per test worker, a fixed seed, no leaks of global
torch state between tests, no hidden dependency on the machine's datasets, and the small
fake datasets the training tests use."""

import os
from collections.abc import Callable

import pytest
import torch

from .datasets import write_fashion_mnist

# Two workers share two cores: one thread each keeps them from fighting.
torch.set_num_threads(int(os.environ.get("ATTN2D_TEST_THREADS", "1")))
# No test may read the system's Fashion-MNIST (Debian's package) without saying so: CI's
# fresh machine does not have it. Subprocesses inherit this.
NO_SYSTEM_DATA = "/nonexistent/attn2d-tests-use-their-own-data"
os.environ["ATTN2D_FASHION_MNIST"] = NO_SYSTEM_DATA


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


@pytest.fixture(scope="session")
def fake_fashion_mnist(tmp_path_factory) -> Callable[..., str]:
    """``make(n_train, n_test)``: a data folder holding a small random Fashion-MNIST in the
    original IDX format (``FashionMNIST/raw``), made once per size and worker."""
    made: dict[tuple[int, int], str] = {}

    def make(n_train: int = 64, n_test: int = 32) -> str:
        if (n_train, n_test) not in made:
            root = tmp_path_factory.mktemp(f"fmnist-{n_train}-{n_test}")
            write_fashion_mnist(root / "FashionMNIST" / "raw", n_train=n_train, n_test=n_test,
                                compressed=False)
            made[n_train, n_test] = str(root)
        return made[n_train, n_test]

    return make

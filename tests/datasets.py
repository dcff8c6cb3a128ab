"""Writers of small dataset files in the real formats, shared by the tests."""

from .test_data import write_fashion_mnist

__all__ = ["write_fashion_mnist"]

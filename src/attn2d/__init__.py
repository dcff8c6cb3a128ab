"""attn2d: 2D attention mechanisms for CNNs, with backbones, a harness, a profiler and maps."""

from .modules import *  # noqa: F403
from .modules import __all__ as _modules_all
from .multilevel import MultiLevel
from .registry import Mechanism, available, create, get, lookup, parse_spec

__version__ = "0.1.0"

__all__ = [
    *_modules_all,
    "Mechanism",
    "MultiLevel",
    "available",
    "create",
    "get",
    "lookup",
    "parse_spec",
]

"""attn2d: 2D attention mechanisms for CNNs, with backbones, a harness, a profiler and maps."""

from . import models
from .models import create_model, inject, list_models
from .modules import *  # noqa: F403
from .modules import __all__ as _modules_all
from .multilevel import MultiLevel
from .registry import LayerFactory, Mechanism, available, create, get, lookup, parse_spec

__version__ = "0.1.0"

__all__ = [
    *_modules_all,
    "LayerFactory",
    "Mechanism",
    "MultiLevel",
    "available",
    "create",
    "create_model",
    "get",
    "inject",
    "list_models",
    "lookup",
    "models",
    "parse_spec",
]

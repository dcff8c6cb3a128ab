"""attn2d: 2D attention mechanisms for CNNs, with backbones, a harness, a profiler and maps.

The package's layers, each importing only from those above it in this list (see
docs/architecture.md): ``_base`` (files, errors, checks, tables), ``stats``, ``modules``
(the mechanisms, their registry and capture), ``models``, ``data``, ``tools`` (profiler,
benchmarks, tracing, map statistics), ``training``, ``viz``, ``comparison``, ``cli``.
"""

from . import models
from ._base.errors import Attn2dError
from ._base.version import __version__
from .models import create_model, inject, list_models
from .modules import *  # noqa: F403
from .modules import __all__ as _modules_all
from .modules.capture import AttentionRecorder
from .modules.multilevel import MultiLevel
from .modules.registry import LayerFactory, Mechanism, available, create, get, lookup, parse_spec

__all__ = [
    *_modules_all,
    "Attn2dError",
    "AttentionRecorder",
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
    "__version__",
    "parse_spec",
]

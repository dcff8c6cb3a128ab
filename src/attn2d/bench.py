"""Deprecated import path: ``attn2d.bench`` moved to ``attn2d.tools.bench``.

Kept so that code written for attn2d 0.1 runs; it warns once and re-exports the new home.
"""

import warnings

from .tools.bench import *  # noqa: F403
from .tools.bench import __all__ as _all0

__all__ = [*_all0]

warnings.warn("attn2d.bench is deprecated: import from attn2d.tools.bench",
              DeprecationWarning, stacklevel=2)

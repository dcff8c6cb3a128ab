"""Deprecated import path: ``attn2d.train`` moved to ``attn2d.training``.

Kept so that code written for attn2d 0.1 runs; it warns once and re-exports the new home.
"""

import warnings

from .training import *  # noqa: F403
from .training import __all__ as _all0

__all__ = [*_all0]

warnings.warn("attn2d.train is deprecated: import from attn2d.training",
              DeprecationWarning, stacklevel=2)

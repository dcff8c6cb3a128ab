"""Deprecated import path: ``attn2d.capture`` moved to ``attn2d.modules.capture``.

Kept so that code written for attn2d 0.1 runs; it warns once and re-exports the new home.
"""

import warnings

from .modules.capture import *  # noqa: F403
from .modules.capture import __all__ as _all0

__all__ = [*_all0]

warnings.warn("attn2d.capture is deprecated: import from attn2d.modules.capture",
              DeprecationWarning, stacklevel=2)

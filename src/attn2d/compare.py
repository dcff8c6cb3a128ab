"""Deprecated import path: ``attn2d.compare`` moved to ``attn2d.comparison``.

Kept so that code written for attn2d 0.1 runs; it warns once and re-exports the new home.
"""

import warnings

from .comparison import *  # noqa: F403
from .comparison import __all__ as _all0

__all__ = [*_all0]

warnings.warn("attn2d.compare is deprecated: import from attn2d.comparison",
              DeprecationWarning, stacklevel=2)

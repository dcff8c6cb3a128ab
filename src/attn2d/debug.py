"""Deprecated import path: ``attn2d.debug`` moved to ``attn2d.tools`` (``trace``,
``gradcheck``, ``map_stats``).

Kept so that code written for attn2d 0.1 runs; it warns once and re-exports the new home.
"""

import warnings

from .tools.gradcheck import *  # noqa: F403
from .tools.gradcheck import __all__ as _all1
from .tools.map_stats import *  # noqa: F403
from .tools.map_stats import __all__ as _all2
from .tools.trace import *  # noqa: F403
from .tools.trace import __all__ as _all0

__all__ = [*_all0, *_all1, *_all2]

warnings.warn("attn2d.debug is deprecated: import from attn2d.tools.trace, attn2d.tools.gradcheck "
              "or attn2d.tools.map_stats",
              DeprecationWarning, stacklevel=2)

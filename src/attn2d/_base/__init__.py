"""The base layer: what every other layer may use and nothing in attn2d depends on.

``io`` (atomic writers, checked readers), ``errors`` (:class:`Attn2dError`), ``validate``
(the input checks), ``log``, ``amp`` (autocast by name), ``shape`` (``3x32x32``),
``tables`` (the one table renderer).
"""

from .errors import Attn2dError

__all__ = ["Attn2dError"]

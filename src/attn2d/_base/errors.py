"""The one exception type for bad input.

Every check in attn2d raises :class:`Attn2dError`, worded ``"<owner>: expected …, got …"``
(the owner is a module, a function or an option such as ``--lr``), so the user sees which
setting was refused and why. The command line prints exactly this type as one line after
the command's name; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["Attn2dError"]


class Attn2dError(ValueError):
    """Bad input: a setting, a file or a machine that attn2d cannot work with.

    A subclass of :class:`ValueError`, so ``except ValueError`` keeps working.
    """

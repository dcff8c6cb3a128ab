"""Typed records that still read like the dicts they replaced."""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["ItemAccess"]


class ItemAccess:
    """``record["field"]``, ``record.get("field")`` and ``"field" in record`` on a dataclass,
    so code written when the record was a dict keeps working. A field that is None counts
    as missing, as an absent key did."""

    def __getitem__(self, key: str) -> Any:
        if key not in {f.name for f in dataclasses.fields(self)}:  # type: ignore[arg-type]
            raise KeyError(key)
        value = getattr(self, key)
        if value is None:
            raise KeyError(key)
        return value

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

"""The one base class for everything that appears on a trace line."""

from __future__ import annotations

import msgspec

# The shared base of the public records: internal, not re-exported by lbcore.
__all__ = ("Record",)


class Record(
    msgspec.Struct,
    frozen=True,
    tag=True,
    tag_field="type",
    forbid_unknown_fields=True,
):
    """Frozen, tagged by class name, strict on decode.

    Tags are class names, so renaming a subclass changes the trace format.
    ``kw_only`` is not inherited by msgspec, so every subclass repeats it.
    Defaults are never omitted when encoding: an old trace must keep its meaning
    even if a default changes later.
    """

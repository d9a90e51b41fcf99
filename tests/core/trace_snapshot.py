"""A syrupy extension whose snapshot files are replayable traces in ``spec/traces``.

The golden traces are the snapshots: one file per scenario, one decision per
line, so a changed decision is a one-line diff to review.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from syrupy.extensions.single_file import SingleFileSnapshotExtension, WriteMode

GOLDEN_DIR = Path(__file__).resolve().parents[2] / "spec" / "traces"


class TraceSnapshotExtension(SingleFileSnapshotExtension):
    file_extension = "jsonl"
    _write_mode = WriteMode.BINARY

    @classmethod
    def dirname(cls, *, test_location: Any) -> str:
        return str(GOLDEN_DIR)

    @classmethod
    def get_snapshot_name(cls, *, test_location: Any, index: Any = 0) -> str:
        # "test_golden_trace[rr_order_wraps]" is stored as "rr_order_wraps.jsonl".
        name = str(test_location.snapshot_name)
        return name[name.index("[") + 1 : -1] if "[" in name else name


class SchemaSnapshotExtension(SingleFileSnapshotExtension):
    """Keeps ``spec/schema/trace.schema.json`` equal to the schema the code would emit.

    It has a folder of its own: syrupy treats every other file in a snapshot
    folder as an unused snapshot, and would offer to delete the spec documents.
    """

    file_extension = "schema.json"
    _write_mode = WriteMode.TEXT

    @classmethod
    def dirname(cls, *, test_location: Any) -> str:
        return str(GOLDEN_DIR.parent / "schema")

    @classmethod
    def get_snapshot_name(cls, *, test_location: Any, index: Any = 0) -> str:
        return "trace"

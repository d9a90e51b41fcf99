"""The trace format is public: any change to it must show up as a reviewed diff."""

from __future__ import annotations

import json

import msgspec
from syrupy.assertion import SnapshotAssertion

from lbcore import Step, TraceHeader

from .trace_snapshot import SchemaSnapshotExtension


def test_trace_schema_is_pinned(snapshot: SnapshotAssertion) -> None:
    schema = msgspec.json.schema(TraceHeader | Step)
    text = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    assert text == snapshot.use_extension(SchemaSnapshotExtension)

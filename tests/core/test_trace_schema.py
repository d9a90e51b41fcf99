"""The trace format is public: any change to it must show up as a reviewed diff."""

from __future__ import annotations

import inspect
import json
from typing import Any

import msgspec
from syrupy.assertion import SnapshotAssertion

from lbcore import Step, TraceHeader

from .trace_snapshot import SchemaSnapshotExtension


def normalised_schema(node: Any) -> Any:
    """The schema with every docstring-derived description in one canonical layout.

    msgspec copies class docstrings into ``description``; 0.22 keeps their
    indentation and 0.23 dedents them. The pin is about fields, types, tags
    and required keys, so the layout of prose must not decide it, but a trace
    reader still gets the descriptions, cleaned as ``inspect.cleandoc`` does.
    """
    if isinstance(node, dict):
        return {
            key: inspect.cleandoc(value)
            if key == "description" and isinstance(value, str)
            else normalised_schema(value)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [normalised_schema(item) for item in node]
    return node


def test_trace_schema_is_pinned(snapshot: SnapshotAssertion) -> None:
    schema = normalised_schema(msgspec.json.schema(TraceHeader | Step))
    text = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    assert text == snapshot.use_extension(SchemaSnapshotExtension)


def test_description_layout_does_not_decide_the_pin() -> None:
    indented = {"description": "First line.\n\n    Second paragraph,\n    indented."}
    dedented = {"description": "First line.\n\nSecond paragraph,\nindented."}
    assert normalised_schema(indented) == normalised_schema(dedented) == dedented


def test_a_changed_field_still_breaks_the_pin() -> None:
    schema = normalised_schema(msgspec.json.schema(TraceHeader | Step))
    renamed = json.loads(json.dumps(schema).replace('"backend"', '"backend_name"'))
    assert renamed != schema
    assert normalised_schema(renamed) != schema

"""The command line's backend specs, e.g. ``b=anthropic:fail:429,stream`` (see GRAMMAR)."""

from __future__ import annotations

import re
from typing import Any, Final

import msgspec

from ._behaviours import BEHAVIOURS, Behaviour
from ._formats import format_for

__all__ = ("GRAMMAR", "BackendSpec", "behaviour_fields", "parse_backend")

GRAMMAR: Final = """
backend specs:
  BACKEND = NAME "=" PROVIDER [":" SCRIPT]
  SCRIPT  = "closed" | STEP {"," STEP}
  STEP    = KIND {":" ARG} ["*" COUNT]
  ARG     = VALUE | FIELD "=" VALUE | FLAG

PROVIDER is openai, anthropic or gemini. Steps answer one request each, in
order, and the last one answers every request after them; no script means
"stream". "closed" makes a backend whose port refuses connections. KIND names
a behaviour (case, "-" and "_" ignored); bare VALUEs fill its fields in the
order below, FIELD=VALUE names one, a FLAG (the name of a true/false field)
sets it, and *COUNT repeats the step. Values cannot hold "," or ":".
"""

_NAME: Final = re.compile(r"[A-Za-z0-9_.\-]+")
_REPEAT: Final = re.compile(r"(.*)\*(\d+)")
#: More repeats than any test needs, and few enough to keep memory small.
_MAX_REPEAT: Final = 10_000


def _kind_key(text: str) -> str:
    return text.lower().replace("-", "").replace("_", "")


_KINDS: Final[dict[str, type[Behaviour]]] = {_kind_key(cls.__name__): cls for cls in BEHAVIOURS}


def behaviour_fields() -> str:
    """One line per behaviour: its name for KIND and its fields in positional order."""
    return "\n".join(
        f"  {kind:<13} {', '.join(cls.__struct_fields__) or '-'}" for kind, cls in _KINDS.items()
    )


class BackendSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One backend as the command line describes it."""

    name: str
    provider: str
    #: The steps in order; the last one is the default. Empty when refused.
    script: tuple[Behaviour, ...]
    refused: bool = False


def parse_backend(text: str) -> BackendSpec:
    """Read ``NAME=PROVIDER[:SCRIPT]``. Raises ``ValueError`` naming the bad part."""
    name, equals, rest = text.partition("=")
    if not equals or not _NAME.fullmatch(name):
        raise ValueError(
            f"{text!r}: expected NAME=PROVIDER[:SCRIPT], NAME made of letters, digits, . _ -"
        )
    provider, _, script = rest.partition(":")
    try:
        format_for(provider)
    except ValueError as error:
        raise ValueError(f"{text!r}: {error}") from None
    if script == "closed":
        return BackendSpec(name=name, provider=provider, script=(), refused=True)
    steps: list[Behaviour] = []
    for step in script.split(",") if script else ["stream"]:
        try:
            steps.extend(_parse_step(step))
        except ValueError as error:
            raise ValueError(f"{text!r}: step {step!r}: {error}") from None
    return BackendSpec(name=name, provider=provider, script=tuple(steps))


def _parse_step(step: str) -> list[Behaviour]:
    count = 1
    repeat = _REPEAT.fullmatch(step)
    if repeat is not None:
        step, count = repeat.group(1), int(repeat.group(2))
        if not 1 <= count <= _MAX_REPEAT:
            raise ValueError(f"the repeat count must be 1..{_MAX_REPEAT}")
    kind, *args = step.split(":")
    cls = _KINDS.get(_kind_key(kind))
    if cls is None:
        raise ValueError(f"unknown behaviour {kind!r} (known: {', '.join(_KINDS)})")
    return [_build(cls, args)] * count


def _build(cls: type[Behaviour], args: list[str]) -> Behaviour:
    fields = cls.__struct_fields__
    flags = _flags(cls)
    values: dict[str, Any] = {}
    position = 0
    for arg in args:
        field, equals, value = arg.partition("=")
        if equals:
            if field not in fields:
                raise ValueError(f"no field {field!r} (fields: {', '.join(fields)})")
        elif arg in flags:
            field, value = arg, "true"
        else:
            if position >= len(fields):
                raise ValueError(f"too many values (fields: {', '.join(fields)})")
            field, value = fields[position], arg
            position += 1
        if field in values:
            raise ValueError(f"{field} is given twice")
        values[field] = value
    try:
        # strict=False turns "429" into 429 and "true" into True, as a command line needs.
        return msgspec.convert(values, cls, strict=False)
    except msgspec.ValidationError as error:
        raise ValueError(str(error)) from None


def _flags(cls: type[Behaviour]) -> set[str]:
    """The names of the true/false fields, which a bare name sets."""
    info = msgspec.inspect.type_info(cls)
    assert isinstance(info, msgspec.inspect.StructType)
    return {field.name for field in info.fields if isinstance(field.type, msgspec.inspect.BoolType)}

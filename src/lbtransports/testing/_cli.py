"""``python -m lbtransports.testing``: serve local backends until Ctrl-C or ``--duration``.

Prints one line per backend, ``NAME PROVIDER BASE_URL``, then ``ready``, so a
script can start it, read the URLs and point clients at them.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Sequence

import anyio

from ._backends import LocalBackends
from ._grammar import GRAMMAR, behaviour_fields, parse_backend

__all__ = ("main",)

_EXAMPLES = """
examples:
  a=openai                          streams 3 chunks to every request
  b=anthropic:fail:429,stream       a 429 first, then streams
  c=gemini:hang                     reads every request and never answers
  d=openai:fail:503:retry_after=2*2,stream:5:delay_ms=100
  e=gemini:closed                   connections refused
"""


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(
            "Serve fault-injecting local LLM backends on 127.0.0.1.\n"
            + GRAMMAR
            + "\nbehaviours and their fields:\n"
            + behaviour_fields()
        ),
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("backends", nargs="+", metavar="BACKEND", help="NAME=PROVIDER[:SCRIPT]")
    parser.add_argument(
        "--duration", type=float, metavar="SECONDS", help="stop after this long (default: Ctrl-C)"
    )
    parser.add_argument(
        "--loop", choices=("asyncio", "trio"), default="asyncio", help="the event loop to run on"
    )
    return parser


def _backends(parser: argparse.ArgumentParser, specs: Sequence[str]) -> LocalBackends:
    backends = LocalBackends()
    try:
        for text in specs:
            spec = parse_backend(text)
            if spec.refused:
                backends.closed(spec.name, spec.provider)
            else:
                *script, default = spec.script
                backends.add(spec.name, spec.provider, *script, default=default)
    except ValueError as error:
        parser.error(str(error))  # exits with status 2
    return backends


async def _serve(backends: LocalBackends, duration: float | None) -> None:
    async with backends:
        for backend in backends:
            print(backend.name, backend.provider.value, backend.base_url, flush=True)
        print("ready", flush=True)
        if duration is None:
            await anyio.sleep_forever()
        else:
            await anyio.sleep(duration)


def main(argv: Sequence[str] | None = None, prog: str = "python -m lbtransports.testing") -> int:
    """Run the command line; the exit status (2 for bad arguments)."""
    parser = _parser(prog)
    args = parser.parse_args(argv)
    if args.duration is not None and not args.duration > 0:
        parser.error(f"--duration must be more than 0 seconds, not {args.duration}")
    backends = _backends(parser, args.backends)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is the normal way to stop
        anyio.run(_serve, backends, args.duration, backend=args.loop)
    return 0

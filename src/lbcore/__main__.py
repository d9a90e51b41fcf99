"""Command line: ``python -m lbcore replay|show|explain FILE...``.

This is the one module of lbcore that reads files and prints; the purity test
makes that exception explicitly.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import msgspec

from ._balancer import Balancer
from ._explain import explain
from ._replay import verify_trace
from ._story import request_ids, tell
from ._trace import Step, TraceError, TraceHeader, decode_trace

__all__ = ("main",)


def _replay(paths: Sequence[str]) -> int:
    failed = 0
    for name in paths:
        try:
            data = Path(name).read_bytes()
        except OSError as exc:
            print(f"{name}: cannot read: {exc.strerror}", file=sys.stderr)
            failed += 1
            continue
        mismatch = verify_trace(data)
        if mismatch is None:
            steps = sum(1 for line in data.splitlines() if line.strip()) - 1
            print(f"{name}: ok ({steps} steps replay identically)")
            continue
        failed += 1
        print(f"{name}: line {mismatch.line} differs", file=sys.stderr)
        print(f"  recorded: {mismatch.expected}", file=sys.stderr)
        print(f"  replayed: {mismatch.actual}", file=sys.stderr)
    return 1 if failed else 0


def _final_stats(header: TraceHeader, steps: Sequence[Step]) -> str:
    """The balancer's stats after the whole trace, replayed afresh."""
    balancer = Balancer(header.config)
    for step in steps:
        balancer.handle(step.event)
    return msgspec.json.format(msgspec.json.encode(balancer.stats()), indent=2).decode()


def _show(paths: Sequence[str], request_id: str | None, with_stats: bool) -> int:
    for name in paths:
        try:
            header, steps = decode_trace(Path(name).read_bytes())
        except (OSError, TraceError) as exc:
            print(f"{name}: {exc}", file=sys.stderr)
            return 1
        print(f"== {name}: {explain(header, steps, request_id)}\n")
        if with_stats:
            print(f"stats after the last step:\n{_final_stats(header, steps)}\n")
    return 0


def _tell(name: str, request_id: str | None) -> int:
    try:
        header, steps = decode_trace(Path(name).read_bytes())
    except (OSError, TraceError) as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 1
    known = request_ids(steps)
    wanted = [request_id] if request_id is not None else known
    print("\n\n".join(tell(header, steps, one) for one in wanted))
    return 0 if request_id is None or request_id in known else 1


def main(argv: Sequence[str] | None = None, prog: str = "python -m lbcore") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    replay = commands.add_parser("replay", help="check that traces replay byte for byte")
    replay.add_argument("files", nargs="+")
    show = commands.add_parser("show", help="print each request's decisions as a table")
    show.add_argument("files", nargs="+")
    show.add_argument("--request", help="only this request id")
    show.add_argument("--stats", action="store_true", help="also print the final stats")
    story = commands.add_parser("explain", help="tell each request's story in sentences")
    story.add_argument("file")
    story.add_argument("--request", help="only this request id")
    args = parser.parse_args(argv)
    if args.command == "replay":
        return _replay(args.files)
    if args.command == "explain":
        return _tell(args.file, args.request)
    return _show(args.files, args.request, args.stats)


if __name__ == "__main__":
    sys.exit(main())

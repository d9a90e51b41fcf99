"""The ``lb`` dispatcher: each command is a small function handed its own arguments.

Commands that already have a command line of their own (the demo, the fake
backends, the trace tools of ``python -m lbcore``) get their arguments as they
are, under the program name ``lb COMMAND``, so their ``--help`` and error
messages name the command the user typed.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Final

from lbcore import __version__

__all__ = ("main",)

Runner = Callable[[list[str], str], int]


def _trace_tool(command: str) -> Runner:
    def run(argv: list[str], prog: str) -> int:
        from lbcore.__main__ import main as lbcore_main

        return lbcore_main([command, *argv], prog=prog.rsplit(" ", 1)[0])

    return run


def _demo(argv: list[str], prog: str) -> int:
    from lbtransports.demo import main as demo_main

    return demo_main(argv, prog=prog)


def _serve_fake(argv: list[str], prog: str) -> int:
    from lbtransports.testing._cli import main as fake_main

    return fake_main(argv, prog=prog)


def _chat(argv: list[str], prog: str) -> int:
    from ._chat import main as chat_main

    return chat_main(argv, prog=prog)


def _serve(argv: list[str], prog: str) -> int:
    from ._serve import main as serve_main

    return serve_main(argv, prog=prog)


#: name -> (one line for ``lb --help``, what runs it)
COMMANDS: Final[dict[str, tuple[str, Runner]]] = {
    "serve": ("run the gateway: the OpenAI and Anthropic APIs over the balancer", _serve),
    "chat": ("send one prompt through a load balancer and stream the answer", _chat),
    "demo": ("the balancer at work on local backends (what `make demo` runs)", _demo),
    "replay": ("check that traces replay byte for byte", _trace_tool("replay")),
    "show": ("print each request's decisions in a trace as a table", _trace_tool("show")),
    "explain": ("tell a traced request's story in sentences", _trace_tool("explain")),
    "serve-fake": ("serve fault-injecting local backends on 127.0.0.1", _serve_fake),
}


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = [
        "usage: lb COMMAND [ARGS...]",
        "",
        "commands:",
        *(f"  {name:<{width}}  {summary}" for name, (summary, _) in COMMANDS.items()),
        "",
        "`lb COMMAND --help` describes a command's arguments.",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``lb``; the exit status (2 for a command line that cannot be read)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print(_usage(), file=sys.stderr)
        return 2
    first, rest = args[0], args[1:]
    if first in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if first == "--version":
        print(f"lb (lbcore) {__version__}")
        return 0
    entry = COMMANDS.get(first)
    if entry is None:
        print(f"lb: unknown command {first!r}; `lb --help` lists them", file=sys.stderr)
        return 2
    return entry[1](rest, f"lb {first}")

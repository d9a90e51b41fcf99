"""``lb chat``: one prompt through a load balancer, its answer streamed to stdout.

The balancer comes from a config file (TOML or JSON, the shape of
:meth:`ClientConfig.from_mapping`, or a gateway config whose group ``--model``
names), or from a saved llxprt profile. Whatever
goes wrong ends as one line on stderr and a non-zero exit status: the messages
are the library's own, which never show a credential, and no traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from pathlib import Path

import msgspec

from lbcore import LBError
from lbtransports._config import ClientConfig
from lbtransports._errors import LoadBalancerError
from lbtransports._profiles import load_profile
from lbtransports.wire import ChatRequest, Message, SystemMessage, UserMessage

__all__ = ("main",)

#: Exit statuses: a request the balancer could not serve is told apart from a
#: config or command line that could not be used.
EXIT_REQUEST_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


class _Refused(Exception):
    """Input that cannot be used; the message is the whole story."""


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Send one prompt through a load balancer and stream the answer to stdout.",
        epilog=(
            "examples:\n"
            "  lb chat --config lb.toml 'Say hello'\n"
            "  lb chat --config gateway.toml --model fast 'Say hello'\n"
            "  echo 'Say hello' | lb chat --profile team-lb --profiles-dir ~/.llxprt/profiles\n"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", metavar="FILE", help="a TOML or JSON balancer config")
    source.add_argument("--profile", metavar="NAME", help="a saved load balancer profile")
    parser.add_argument(
        "--profiles-dir",
        metavar="DIR",
        default="~/.llxprt/profiles",
        help="where --profile looks (default ~/.llxprt/profiles)",
    )
    parser.add_argument(
        "--model",
        metavar="GROUP",
        help="with a gateway config: the group to use (default: its only group)",
    )
    parser.add_argument("--system", metavar="TEXT", help="a system prompt")
    parser.add_argument("--trace", metavar="FILE", help="record every decision to this trace")
    parser.add_argument(
        "--stats", action="store_true", help="print the balancer's stats to stderr at the end"
    )
    parser.add_argument("prompt", nargs="?", help="the prompt (default: read from stdin)")
    return parser


def _read_config(path: str, model: str | None) -> ClientConfig:
    try:
        data = Path(path).expanduser().read_bytes()
    except OSError as error:
        raise _Refused(f"{path}: cannot read: {error.strerror}") from None
    try:
        if path.endswith(".json"):
            mapping = json.loads(data)
        else:
            mapping = tomllib.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        # Parser messages give a line and column, never the text around it.
        raise _Refused(
            f"{path}: not valid {'JSON' if path.endswith('.json') else 'TOML'}: {error}"
        ) from None
    if isinstance(mapping, dict) and "groups" in mapping:
        return _gateway_group(path, mapping, model)
    if model is not None:
        raise _Refused(f"--model {model}: only a gateway config has groups to choose from")
    return ClientConfig.from_mapping(mapping)


def _gateway_group(path: str, mapping: dict[str, object], model: str | None) -> ClientConfig:
    """The client config of one group of a gateway config (the file ``lb serve`` reads)."""
    # Imported here: the gateway's modules are only needed for gateway configs.
    from lbtransports.gateway import config_from_mapping

    # Only the groups matter here: no gateway is served, so no caller keys are needed.
    gateway = config_from_mapping(
        mapping, base=Path(path).expanduser().parent, host="127.0.0.1", no_auth=True
    )
    names = [group.name for group in gateway.groups]
    if model is None:
        if len(names) != 1:
            raise _Refused(f"{path}: has groups {names}; choose one with --model")
        model = names[0]
    for group in gateway.groups:
        if group.name == model:
            return group.client
    raise _Refused(f"--model {model}: {path} has no such group (it has {names})")


def _prompt(given: str | None) -> str:
    if given is not None:
        text = given
    elif sys.stdin.isatty():
        raise _Refused("no prompt: give one as an argument or on stdin")
    else:
        text = sys.stdin.read()
    if not text.strip():
        raise _Refused("the prompt is empty")
    return text


def _stats_text(stats: object) -> str:
    return msgspec.json.format(msgspec.json.encode(stats), indent=2).decode()


def main(argv: list[str], prog: str = "lb chat") -> int:
    args = _parser(prog).parse_args(argv)
    try:
        config = (
            _read_config(args.config, args.model)
            if args.config is not None
            else load_profile(args.profiles_dir, args.profile)
        )
        messages: list[Message] = []
        if args.system:
            messages.append(SystemMessage(content=args.system))
        messages.append(UserMessage(content=_prompt(args.prompt)))
        request = ChatRequest(messages=tuple(messages))
    except (_Refused, LBError) as error:
        print(f"{prog}: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return _send(prog, config, request, args.trace, args.stats)


def _send(
    prog: str, config: ClientConfig, request: ChatRequest, trace: str | None, with_stats: bool
) -> int:
    from lbtransports._sync import Client

    status = 0
    try:
        client = Client(config, trace=trace)
    except OSError as error:
        print(f"{prog}: {trace}: cannot write the trace: {error.strerror}", file=sys.stderr)
        return EXIT_BAD_INPUT
    with client:
        try:
            with client.chat(request) as stream:
                for chunk in stream:
                    if chunk.text:
                        sys.stdout.write(chunk.text)
                        sys.stdout.flush()
            sys.stdout.write("\n")
        except LoadBalancerError as error:
            sys.stdout.flush()
            print(f"\n{prog}: {type(error).__name__}: {error}", file=sys.stderr)
            status = EXIT_REQUEST_FAILED
        except KeyboardInterrupt:
            print(f"\n{prog}: interrupted", file=sys.stderr)
            status = EXIT_INTERRUPTED
        if with_stats:
            print(_stats_text(client.stats()), file=sys.stderr)
    return status

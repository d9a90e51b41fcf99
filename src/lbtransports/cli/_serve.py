"""``lb serve``: the gateway, from a TOML config, until SIGTERM or Ctrl-C."""

from __future__ import annotations

import argparse
import sys

from lbcore import LBError

__all__ = ("main",)


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(
            "Serve the OpenAI (POST /v1/chat/completions, GET /v1/models) and Anthropic "
            "(POST /v1/messages) APIs over the load balancer groups of a TOML config. "
            "spec/gateway.md describes every endpoint."
        ),
        epilog="example:\n  lb serve --config gateway.toml --port 8080\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", metavar="FILE", required=True, help="the gateway's TOML file")
    parser.add_argument("--host", help="the address to bind (default: the config's, 127.0.0.1)")
    parser.add_argument("--port", type=int, help="the port (default: the config's, 8080; 0 = any)")
    parser.add_argument(
        "--no-auth",
        action="store_true",
        help="accept callers without a gateway key (refused unless the address is loopback)",
    )
    parser.add_argument("--loop", choices=("asyncio", "trio"), default="asyncio")
    parser.add_argument(
        "--shared",
        metavar="URL",
        help="share breakers, TPM windows and cooldowns with other gateway processes through "
        "this Redis (redis://[:password@]host:port/db); spec/behaviour.md section 23",
    )
    parser.add_argument(
        "--shared-prefix",
        metavar="PREFIX",
        default="lb",
        help="the prefix of every Redis key (each group adds its name); default lb",
    )
    return parser


def main(argv: list[str], prog: str = "lb serve") -> int:
    args = _parser(prog).parse_args(argv)
    from lbtransports.gateway import load_config, run, share_groups

    try:
        config = load_config(
            args.config, host=args.host, port=args.port, no_auth=True if args.no_auth else None
        )
        if args.shared is not None:
            config = share_groups(config, args.shared, args.shared_prefix)
    except LBError as error:
        print(f"{prog}: {error}", file=sys.stderr)
        return 2

    def ready(host: str, port: int) -> None:
        groups = ", ".join(group.name for group in config.groups)
        print(f"{prog}: listening on http://{host}:{port} (models: {groups})", flush=True)

    try:
        run(config, backend=args.loop, ready=ready)
    except OSError as error:
        print(
            f"{prog}: cannot listen on {config.host}:{config.port}: {error.strerror}",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        pass
    return 0

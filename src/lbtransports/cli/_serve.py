"""``lb serve``: the gateway, from a TOML config, until SIGTERM or Ctrl-C."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys

from lbcore import ConfigError, LBError

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
        "this Redis (redis://[:password@]host:port/db); spec/behaviour.md section 26",
    )
    parser.add_argument(
        "--shared-prefix",
        metavar="PREFIX",
        default="lb",
        help="the prefix of every Redis key (each group adds its name); default lb",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="serve from N processes on one port (SO_REUSEPORT; needs a fixed --port); "
        "with --shared they share the backends' state",
    )
    # Set by the first worker for the others it starts; not for callers.
    parser.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)
    return parser


def _worker_argv(args: argparse.Namespace, index: int) -> list[str]:
    """The command line of worker ``index``: this one's, naming its index."""
    argv = [sys.executable, "-m", "lbtransports.cli", "serve", "--config", args.config]
    for flag, value in (("--host", args.host), ("--port", args.port), ("--shared", args.shared)):
        if value is not None:
            argv += [flag, str(value)]
    argv += ["--shared-prefix", args.shared_prefix, "--loop", args.loop]
    if args.no_auth:
        argv.append("--no-auth")
    return [*argv, "--worker-index", str(index)]


def _stop_workers(workers: list[subprocess.Popen[bytes]]) -> None:
    """Stop the workers this process started, each by its PID, then wait for them (bounded)."""
    for worker in workers:
        if worker.poll() is None:
            os.kill(worker.pid, signal.SIGTERM)
    for worker in workers:
        try:
            worker.wait(15)
        except subprocess.TimeoutExpired:
            os.kill(worker.pid, signal.SIGKILL)
            worker.wait(5)


def main(argv: list[str], prog: str = "lb serve") -> int:
    args = _parser(prog).parse_args(argv)
    from lbtransports.gateway import for_worker, load_config, run, share_groups

    try:
        config = load_config(
            args.config, host=args.host, port=args.port, no_auth=True if args.no_auth else None
        )
        if args.shared is not None:
            config = share_groups(config, args.shared, args.shared_prefix)
        if args.workers < 1:
            raise ConfigError(f"--workers: must be at least 1, got {args.workers}")
        if args.workers > 1 or args.worker_index:
            if config.port == 0:
                raise ConfigError("--workers: needs a fixed port (not 0) for the workers to share")
            config = for_worker(config, args.worker_index)
    except LBError as error:
        print(f"{prog}: {error}", file=sys.stderr)
        return 2

    workers: list[subprocess.Popen[bytes]] = []

    def ready(host: str, port: int) -> None:
        groups = ", ".join(group.name for group in config.groups)
        worker = f", worker {args.worker_index}" if args.workers > 1 or args.worker_index else ""
        print(f"{prog}: listening on http://{host}:{port} (models: {groups}{worker})", flush=True)
        # The first worker is bound: the others join it on the same port.
        if not args.worker_index:
            for index in range(1, args.workers):
                workers.append(subprocess.Popen(_worker_argv(args, index)))

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
    finally:
        _stop_workers(workers)
    return 0

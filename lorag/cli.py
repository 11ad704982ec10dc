"""The `lorag` command line: the one module tree that imports the gateway, retrieval, adapters and the load test.

Nothing under server/, retrieval/, adapters/ or loadtest/ imports it. Subcommands import their heavy dependencies
(torch, vLLM, uvicorn) only when they run, so `lorag --help` stays fast.
"""

from __future__ import annotations

import argparse
import sys

from lorag import admin, bench, catalog, engine, keys, kit, serve, train, truthfulness


def build_parser() -> argparse.ArgumentParser:
    """The whole `lorag` parser."""
    parser = argparse.ArgumentParser(prog="lorag", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    kit.register(sub)
    engine.register(sub)
    catalog.register(sub)
    bench.register(sub)
    serve.register(sub)
    admin.register(sub)
    keys.register(sub)
    train.register(sub)
    truthfulness.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one `lorag` command; its exit status."""
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())

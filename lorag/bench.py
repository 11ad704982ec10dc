"""`lorag bench retrieval|load|guard`: retrieval quality and speed, the serving load test, the guard's cost."""

from __future__ import annotations

import argparse
from pathlib import Path

from loadtest.guard_cost import __doc__ as guard_cost_doc_text
from loadtest.guard_cost import add_arguments as guard_cost_arguments
from loadtest.options import USAGE, add_arguments
from loadtest.peer import __doc__ as peer_doc
from loadtest.peer import add_arguments as peer_arguments
from loadtest.soak import __doc__ as soak_doc
from loadtest.soak import add_arguments as soak_arguments
from loadtest.workers import __doc__ as workers_doc
from loadtest.workers import add_arguments as workers_arguments
from lorag.catalog import reporting_errors, settings_from, store_args
from retrieval.esci import SAMPLE as ESCI_SAMPLE
from retrieval.fields import FIELD_VARIANTS


def _retrieval(args: argparse.Namespace) -> int:
    from retrieval.bench import run_bench

    return run_bench(args, settings_from(args))


def _load(args: argparse.Namespace) -> int:
    from loadtest.load import run

    return run(args)


def _guard(args: argparse.Namespace) -> int:
    from loadtest.guard_cost import run

    return run(args)


def _peer(args: argparse.Namespace) -> int:
    from loadtest.peer import run

    return run(args)


def _soak(args: argparse.Namespace) -> int:
    from loadtest.soak import run

    return run(args)


def _workers(args: argparse.Namespace) -> int:
    from loadtest.workers import run

    return run(args)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `bench retrieval`, `bench load` and `bench guard` to the lorag command line."""
    bench = sub.add_parser("bench", help="benchmarks").add_subparsers(dest="bench_command", required=True)
    ret = bench.add_parser("retrieval", help="retrieval quality (nDCG/recall/MRR), latency and ingest speed")
    ret.add_argument("--beir", type=Path, action="append", default=[], help="a BEIR-layout dataset directory")
    ret.add_argument("--wands", type=Path, help="a WANDS checkout's dataset/ directory (converted to BEIR)")
    ret.add_argument("--no-demo", action="store_true", help="skip the labelled demo query set")
    ret.add_argument("--query-seed", type=int, default=20, help="seed of the labelled demo query set")
    ret.add_argument("--write-demo-beir", type=Path, metavar="DIR", help="write the demo set in BEIR layout")
    ret.add_argument("--latency", action="store_true", help="embed+search p50/p99 at each --concurrency")
    ret.add_argument("--ingest", action="store_true", help="ingest throughput (products/s)")
    ret.add_argument("--sizes", default="300", help="catalog sizes for --latency/--ingest, e.g. 300,50000")
    ret.add_argument("--concurrency", default="1,16")
    ret.add_argument("--queries", type=int, default=200, help="queries per latency run")
    ret.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the 95%% intervals")
    ret.add_argument("--json-out", type=Path, help="also write the results as JSON")
    ret.add_argument("--fusion", choices=["rrf", "dbsf"], help="fusion of the full retrieve path (LORAG_FUSION)")
    ret.add_argument(
        "--reranker",
        type=Path,
        metavar="DIR",
        help="a cross-encoder (lorag catalog distill-reranker) reordering the full path's top 10: one more row",
    )
    ret.add_argument(
        "--esci",
        type=Path,
        nargs="?",
        const=ESCI_SAMPLE,
        action="append",
        default=[],
        help="an ESCI examples-with-products CSV (real Amazon queries, judged); alone: the sample lorag ships; "
        "repeatable",
    )
    ret.add_argument(
        "--esci-halves",
        action="store_true",
        help="with --esci, also each half of its queries' products alone: the other half's must be flagged",
    )
    ret.add_argument(
        "--fusion-grid",
        action="store_true",
        help="also measure DBSF with dense weights 0..1 and sparse-first, fused from the two top-100 lists",
    )
    ret.add_argument(
        "--fields",
        choices=FIELD_VARIANTS,
        default="all",
        help="what is indexed: all fields, the name alone, or the name counted twice (per-field weighting)",
    )
    store_args(ret)
    ret.set_defaults(func=reporting_errors(_retrieval))

    load = bench.add_parser(
        "load",
        help="load test: gateway against vLLM directly (TTFT, TPOT, ITL, goodput, cost)",
        description=USAGE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(load)
    load.set_defaults(func=_load)

    guard = bench.add_parser(
        "guard",
        help="the truthfulness guard's cost to streams: TTFT and ITL per policy, side by side (stub upstream)",
        description=guard_cost_doc_text,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    guard_cost_arguments(guard)
    guard.set_defaults(func=_guard)

    peer = bench.add_parser(
        "peer",
        help="lorag beside LiteLLM's proxy over the stub upstream: added latency and CPU per request, side by side",
        description=peer_doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    peer_arguments(peer)
    peer.set_defaults(func=_peer)

    workers = bench.add_parser(
        "workers",
        help="requests/s with retrieval on for 1, 2, 4 ... workers without a Qdrant server (stub upstream)",
        description=workers_doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    workers_arguments(workers)
    workers.set_defaults(func=_workers)

    soak = bench.add_parser(
        "soak",
        help="minutes of steady load with API keys and limits on (stub upstream): errors, predicted 429s, RSS, p99",
        description=soak_doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    soak_arguments(soak)
    soak.set_defaults(func=_soak)

"""The load test's options: `lorag bench load` and `python -m loadtest.load` share them.

Only the standard library here, so that building the lorag parser imports nothing heavy.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

DEFAULT_FILE = Path(__file__).parent / "scenarios" / "demo.yaml"
USAGE = """LLM-serving load test: a scenario's requests against the gateway, vLLM directly, or both interleaved.

    lorag bench load --gateway-url http://127.0.0.1:8000 --direct-url http://127.0.0.1:8001 --concurrency 1,16,64
    lorag bench load --spawn-stub --requests 300          # no GPU: the stub upstream with a gateway in front
    python -m loadtest.load --gateway-url URL --mode open --rate 1,4,16 --duration 60

Metrics are those of `vllm bench serve` (TTFT, TPOT, ITL, end-to-end latency, throughput, goodput against the
SLOs). With both URLs it compares: each level runs in alternating blocks to both targets and the tables show
gateway/direct ratios. The gateway is addressed by assistant name, vLLM by served name: from --direct-model-map,
else the scenario file's `direct`, else the gateway's GET /v1/models. Writes results.json, results.md and PNG
plots to --out, and prints the tables.
"""


def _levels(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def _model_map(text: str) -> dict[str, str]:
    pairs = [item.partition("=") for item in text.split(",") if item.strip()]
    if any(not sep for _, sep, _ in pairs):
        raise argparse.ArgumentTypeError("expected ASSISTANT=SERVED_NAME[,...]")
    return {a.strip(): s.strip() for a, _, s in pairs}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The load test's options (shared by `lorag bench load` and `python -m loadtest.load`)."""
    where = parser.add_argument_group("targets")
    where.add_argument("--gateway-url", help="the gateway's base URL, e.g. http://127.0.0.1:8000")
    where.add_argument("--direct-url", help="vLLM's base URL; with --gateway-url: compare the two")
    where.add_argument("--direct-model-map", type=_model_map, metavar="A=SERVED,...", help="vLLM name per assistant")
    where.add_argument("--spawn-stub", action="store_true", help="start the stub upstream and a gateway, compare")
    where.add_argument("--stub-ttft-ms", type=float, default=0.0, help="with --spawn-stub")
    where.add_argument("--stub-tokens-per-s", type=float, default=0.0, help="with --spawn-stub; 0: at once")
    where.add_argument("--stub-tokens", type=int, default=16, help="with --spawn-stub: tokens per answer")
    where.add_argument("--api-key", default=os.environ.get("LORAG_LOAD_API_KEY"), help="bearer token, if needed")
    what = parser.add_argument_group("scenario")
    what.add_argument("--scenario-file", type=Path, default=DEFAULT_FILE, help="YAML; see loadtest/scenario.py")
    what.add_argument("--scenario", help="a scenario of the file (default: its first)")
    what.add_argument("--list-scenarios", action="store_true")
    what.add_argument("--mix", choices=["uniform", "skewed"], help="override the scenario's")
    what.add_argument("--max-tokens", type=int, help="override the scenario's")
    what.add_argument("--stream", action=argparse.BooleanOptionalAction, help="override the scenario's")
    what.add_argument("--retrieval", action=argparse.BooleanOptionalAction, help="with --spawn-stub")
    how = parser.add_argument_group("load")
    how.add_argument("--mode", choices=["closed", "open"], default="closed")
    how.add_argument("--concurrency", type=_levels, default=[1.0, 16.0, 64.0], help="closed loop: clients per level")
    how.add_argument("--rate", type=_levels, default=[1.0, 4.0, 16.0], help="open loop: Poisson arrivals per second")
    how.add_argument("--max-concurrency", type=int, help="open loop: at most this many in flight")
    how.add_argument("--requests", type=int, default=200, help="per target per level (0: only --duration)")
    how.add_argument("--duration", type=float, help="seconds per target per level")
    how.add_argument("--rounds", type=int, help="alternating blocks per target per level (default: 4 comparing, 1)")
    how.add_argument("--no-warmup", dest="warmup", action="store_false")
    how.add_argument("--timeout", type=float, default=300.0, help="seconds per request")
    how.add_argument("--seed", type=int, help="request order (default: the scenario's)")
    how.add_argument("--quiet", action="store_true", help="no progress bar")
    out = parser.add_argument_group("results")
    out.add_argument("--slo-ttft-ms", type=float, default=450.0)
    out.add_argument("--slo-tpot-ms", type=float, default=40.0)
    out.add_argument("--slo-e2el-ms", type=float)
    out.add_argument("--out", type=Path, default=Path("build/load"), help="results.json, results.md, *.png")
    out.add_argument("--no-plots", dest="plots", action="store_false")
    out.add_argument("--gpu-price-per-hour", type=float, help="price of the server measured, for the cost table")
    out.add_argument("--traffic-per-day", type=float, default=10_000, help="requests per day, for the cost table")

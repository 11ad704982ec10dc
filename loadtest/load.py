"""Running a load test from its options: targets, levels, the progress bar, and writing the results.

The options and their help are in loadtest/options.py; `python -m loadtest.load` takes the same as `lorag bench load`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from loadtest.driver import Load, Target, run_level
from loadtest.local import StubTiming, local_stack
from loadtest.metrics import SLO
from loadtest.options import USAGE, add_arguments
from loadtest.record import RequestRecord
from loadtest.report import level_result, markdown, plots
from loadtest.scenario import Scenario, ScenarioError, load_scenario, load_scenarios
from loadtest.stubrun import runner


def direct_models(scenario: Scenario, given: dict[str, str] | None, gateway_url: str | None) -> dict[str, str]:
    """vLLM's served name for each assistant: the option, else the scenario file, else the gateway's /v1/models."""
    models = {a.name: a.direct for a in scenario.assistants if a.direct}
    models.update(given or {})
    missing = [a.name for a in scenario.assistants if a.name not in models]
    if missing and gateway_url:
        cards = httpx.get(gateway_url.rstrip("/") + "/v1/models", timeout=30).raise_for_status().json()["data"]
        models |= {c["id"]: c["root"] for c in cards if c["id"] in missing and c.get("root")}
    if missing := [a.name for a in scenario.assistants if a.name not in models]:
        raise ScenarioError(f"no vLLM served name for {', '.join(missing)}: give --direct-model-map")
    return models


def _scenario(args: argparse.Namespace) -> Scenario:
    scenario = load_scenario(args.scenario_file, args.scenario)
    overrides = {"mix": args.mix, "max_tokens": args.max_tokens, "stream": args.stream, "retrieval": args.retrieval}
    return dataclasses.replace(scenario, **{k: v for k, v in overrides.items() if v is not None})


def _machine() -> dict[str, Any]:
    model = ""
    try:
        model = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    return {"host": platform.node(), "cpus": os.cpu_count(), "cpu_model": model or platform.processor()}


class Progress:
    """The progress bar of one level: requests done, and errors once there are any."""

    def __init__(self, total: int | None, label: str, quiet: bool) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, desc=label, unit="req", disable=quiet, mininterval=0.5, file=sys.stderr)
        self.errors = 0

    def __call__(self, record: RequestRecord) -> None:
        self.errors += not record.ok
        self.bar.update(1)
        if self.errors:
            self.bar.set_postfix(errors=self.errors, refresh=False)


def measure(args: argparse.Namespace, scenario: Scenario, targets: list[Target]) -> dict[str, Any]:
    """Every load level against the targets; the results document."""
    slo = SLO(args.slo_ttft_ms, args.slo_tpot_ms, args.slo_e2el_ms)
    levels = args.concurrency if args.mode == "closed" else args.rate
    count = args.requests or None
    rounds = args.rounds or (4 if len(targets) > 1 else 1)
    load_at_start = os.getloadavg()
    results = []
    for level in levels:
        load = Load(args.mode, level, args.max_concurrency if args.mode == "open" else None)
        progress = Progress(count * len(targets) if count else None, load.label, args.quiet)
        level_run = run_level(
            scenario, targets, load, count, args.duration, rounds, args.warmup, args.timeout, progress, args.seed
        )
        try:
            with runner() as loop_runner:
                measured = loop_runner.run(level_run)
        finally:
            progress.bar.close()
        results.append(level_result(load, measured, slo, args.gpu_price_per_hour, args.traffic_per_day))
    load_avg = os.getloadavg()
    run_info = {
        "date": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "machine": _machine()
        | {
            "load_average_at_start": [round(x, 2) for x in load_at_start],
            "load_average_at_end": [round(x, 2) for x in load_avg],
        },
        "command": " ".join(sys.argv),
        "scenario": dataclasses.asdict(scenario) | {"base": str(scenario.base)},
        "targets": [dataclasses.asdict(t) | {"api_key": None} for t in targets],
        "mode": args.mode,
        "requests_per_level": count,
        "duration_per_level": args.duration,
        "rounds": rounds,
        "slo": dataclasses.asdict(slo),
    }
    if args.spawn_stub:
        run_info["stub"] = dataclasses.asdict(StubTiming(args.stub_ttft_ms, args.stub_tokens_per_s, args.stub_tokens))
    return {"run": run_info, "levels": results}


def _targets(
    args: argparse.Namespace, scenario: Scenario, gateway: str | None, direct: str | None, spawned: bool = False
) -> list[Target]:
    targets = [Target("gateway", gateway, None, args.api_key)] if gateway else []
    if direct:
        # The spawned stub serves each assistant as an adapter of the same name, whatever the file says.
        given = args.direct_model_map or ({a.name: a.name for a in scenario.assistants} if spawned else None)
        models = direct_models(scenario, given, gateway)
        targets.append(Target("direct", direct, models, args.api_key))
    return targets


def write(document: dict[str, Any], out: Path, with_plots: bool, slo: SLO) -> list[Path]:
    """results.json, results.md and the plots under `out`."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "results.json", out / "results.md"]
    written[0].write_text(json.dumps(document, indent=2, default=str) + "\n")
    written[1].write_text(_header(document) + "\n\n" + markdown(document["levels"]) + "\n")
    if with_plots:
        try:
            written += plots(document["levels"], out, slo)
        except ImportError:
            print("no plots: matplotlib is not installed (pip install -e '.[dev]')", file=sys.stderr)
    return written


def _header(document: dict[str, Any]) -> str:
    run = document["run"]
    m = run["machine"]
    bound = f"{run['requests_per_level']} requests" if run["requests_per_level"] else ""
    if run["duration_per_level"]:
        bound += f"{' or ' if bound else ''}{run['duration_per_level']:g} s"
    return (
        f"{run['date']}, {m['cpus']} CPUs ({m['cpu_model']}), load average {m['load_average_at_start'][0]} at the "
        f"start, {m['load_average_at_end'][0]} at the end; "
        f"scenario {run['scenario']['name']}, {run['mode']} loop, {bound} per target per level "
        f"in up to {run['rounds']} alternating block(s); "
        f"SLOs TTFT <= {run['slo']['ttft_ms']:g} ms, TPOT <= {run['slo']['tpot_ms']:g} ms"
    )


def run(args: argparse.Namespace) -> int:
    """The `bench load` command."""
    try:
        if args.list_scenarios:
            for name, s in load_scenarios(args.scenario_file).items():
                print(f"{name}: {s.description}")
            return 0
        scenario = _scenario(args)
        if not (args.spawn_stub or args.gateway_url or args.direct_url):
            print("lorag: give --gateway-url, --direct-url (or both), or --spawn-stub", file=sys.stderr)
            return 2
        if not args.requests and not args.duration:
            print("lorag: give --requests or --duration", file=sys.stderr)
            return 2
        if args.spawn_stub:
            timing = StubTiming(args.stub_ttft_ms, args.stub_tokens_per_s, args.stub_tokens)
            with local_stack(scenario, timing, args.out / "logs") as stack:
                document = measure(args, scenario, _targets(args, scenario, stack.gateway_url, stack.direct_url, True))
        else:
            if args.gateway_url and not scenario.retrieval:
                print(
                    "note: retrieval is as the gateway's manifest sets it; the scenario's applies with --spawn-stub",
                    file=sys.stderr,
                )
            document = measure(args, scenario, _targets(args, scenario, args.gateway_url, args.direct_url))
    except (ScenarioError, httpx.HTTPError) as exc:
        print(f"lorag: {exc}", file=sys.stderr)
        return 2
    slo = SLO(args.slo_ttft_ms, args.slo_tpot_ms, args.slo_e2el_ms)
    written = write(document, args.out, args.plots, slo)
    print(_header(document) + "\n\n" + markdown(document["levels"]))
    print(f"\nwrote {', '.join(str(p) for p in written)}", file=sys.stderr)
    nothing = [
        f"{level['load']['label']} {name}"
        for level in document["levels"]
        for name, t in level["targets"].items()
        if not t["completed"]
    ]
    if nothing:
        print(f"lorag: no request completed at {', '.join(nothing)}", file=sys.stderr)
    return 1 if nothing else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.load", description=USAGE, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

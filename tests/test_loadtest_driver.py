"""The load driver against the stub upstream: closed and open loops, compare mode, failures, results written."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from itertools import islice
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.types import ASGIApp

from loadtest.driver import Load, Target, block
from loadtest.load import direct_models, main
from loadtest.scenario import (
    AssistantShare,
    ScenarioError,
    conversations,
    load_scenario,
    load_scenarios,
    requests,
)
from tests.stub_upstream import Stub, StubConfig

TOKENS = 4
SCENARIO = """
defaults:
  assistants:
    - {name: expert, weight: 3, direct: served-expert}
    - {name: helper, weight: 1, direct: served-helper}
  prompts: {catalog: demo, questions: 40, follow_ups: 0.25, seed: 3}
  max_tokens: 4
scenarios:
  skewed: {}
  whole: {stream: false, mix: uniform}
"""


@pytest.fixture
def stub(serve_app: Callable[[ASGIApp], AbstractContextManager[str]]) -> Iterator[tuple[Stub, str]]:
    """The stub serving both the assistants' names (as the gateway would) and their vLLM served names."""
    names = ["expert", "helper", "served-expert", "served-helper"]
    server = Stub(StubConfig(adapters=names, tokens=TOKENS))
    with serve_app(server.app) as url:
        yield server, url


@pytest.fixture
def scenario_file(tmp_path: Path) -> Path:
    path = tmp_path / "scenarios.yaml"
    path.write_text(SCENARIO)
    return path


def _results(out: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((out / "results.json").read_text())
    return data


def _check(target: dict[str, Any], count: int, stream: bool = True) -> None:
    assert (target["requests"], target["completed"], target["errors"]) == (count, count, {})
    assert target["output_tokens"] == count * TOKENS
    assert sum(a["completed"] for a in target["assistants"].values()) == count
    assert target["e2el_ms"]["p50"] > 0
    if stream:
        assert target["itl_ms"]["p99"] is not None and target["tpot_ms"]["mean"] is not None


def test_closed_loop_direct(stub: tuple[Stub, str], scenario_file: Path, tmp_path: Path) -> None:
    server, url = stub
    out = tmp_path / "closed"
    argv = ["--direct-url", url, "--scenario-file", str(scenario_file), "--concurrency", "1,4", "--requests", "20"]
    assert main([*argv, "--out", str(out), "--gpu-price-per-hour", "2.5"]) == 0
    levels = _results(out)["levels"]
    assert [level["load"]["label"] for level in levels] == ["c=1", "c=4"]
    for level in levels:
        _check(level["targets"]["direct"], 20)
        assert level["targets"]["direct"]["cost"]["servers"] == 1
    # The direct target is addressed by served names, streamed with usage.
    assert {r["model"] for r in server.requests} <= {"served-expert", "served-helper"}
    assert server.requests[-1]["stream_options"] == {"include_usage": True}
    for name in ("results.json", "results.md", "latency_vs_load.png", "latency_per_assistant.png"):
        assert (out / name).stat().st_size > 0
    assert "$ per 1,000 requests" in (out / "results.md").read_text()


def test_open_loop_whole_answers(stub: tuple[Stub, str], scenario_file: Path, tmp_path: Path) -> None:
    server, url = stub
    out = tmp_path / "open"
    argv = ["--gateway-url", url, "--scenario-file", str(scenario_file), "--scenario", "whole", "--mode", "open"]
    argv += ["--rate", "100", "--max-concurrency", "8", "--requests", "20", "--out", str(out), "--no-plots"]
    assert main([*argv, "--quiet"]) == 0
    (level,) = _results(out)["levels"]
    assert level["load"] == {"mode": "open", "level": 100.0, "max_concurrency": 8, "label": "100 req/s"}
    target = level["targets"]["gateway"]
    _check(target, 20, stream=False)
    assert target["ttft_ms"] == target["e2el_ms"]  # not streamed: the first token comes with the last
    assert {r["model"] for r in server.requests} <= {"expert", "helper"}
    assert not (out / "latency_vs_load.png").exists()


def test_compare_interleaves_and_prints_ratios(
    stub: tuple[Stub, str], scenario_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, url = stub
    out = tmp_path / "compare"
    argv = ["--gateway-url", url, "--direct-url", url, "--scenario-file", str(scenario_file), "--rounds", "2"]
    argv += ["--concurrency", "1,2,8", "--requests", "16", "--out", str(out), "--direct-model-map", "helper=helper"]
    assert main(argv) == 0
    levels = _results(out)["levels"]
    for level in levels:
        _check(level["targets"]["gateway"], 16)
        _check(level["targets"]["direct"], 16)
        assert level["ratios"]["ttft_p50"] > 0 and level["ratios"]["request_throughput"] > 0
    # Two alternating blocks each, except at c=8: 16 requests are two waves, too few to split.
    assert [level["targets"]["direct"]["blocks"] for level in levels] == [2, 2, 1]
    printed = capsys.readouterr()
    assert "Gateway / direct" in printed.out and "| c=2 | gateway | 16 | 0 |" in printed.out
    assert "c=2" in printed.err  # the progress bar


def test_failures_are_counted_by_type(stub: tuple[Stub, str], scenario_file: Path) -> None:
    server, url = stub
    scenario = load_scenario(scenario_file)

    async def run(count: int) -> list[str | None]:
        async with httpx.AsyncClient() as client:
            records, _ = await block(client, Target("gateway", url), requests(scenario), Load("closed", 2), count, None)
        return [r.error for r in records]

    server.config.status = 503
    assert asyncio.run(run(3)) == ["http_503"] * 3
    server.config.status = None
    server.config.error_event_after = 1
    assert asyncio.run(run(2)) == ["stream_error"] * 2
    server.config.error_event_after = None
    server.config.fail_after = 1
    assert asyncio.run(run(2)) == ["connection_lost"] * 2
    assert asyncio.run(_unknown_model(url)) == "http_404"


async def _unknown_model(url: str) -> str | None:
    async with httpx.AsyncClient() as client:
        spec = next(requests(load_scenario()))
        records, _ = await block(client, Target("gateway", url), iter([spec]), Load("closed", 1), 1, None)
    return records[0].error


def test_time_bound_block(stub: tuple[Stub, str], scenario_file: Path) -> None:
    server, url = stub
    server.config.ttft = 0.05

    async def run() -> tuple[int, float]:
        async with httpx.AsyncClient() as client:
            specs = requests(load_scenario(scenario_file))
            records, seconds = await block(client, Target("t", url), specs, Load("open", 40), None, 0.3)
        return len(records), seconds

    count, seconds = asyncio.run(run())
    assert 2 <= count <= 40 and 0.3 <= seconds < 2


def test_direct_names_from_the_gateway_models(stub: tuple[Stub, str], scenario_file: Path) -> None:
    _, url = stub
    scenario = load_scenario(scenario_file)
    assert direct_models(scenario, None, None) == {"expert": "served-expert", "helper": "served-helper"}
    assert direct_models(scenario, {"expert": "x"}, None)["expert"] == "x"
    # Without `direct` in the file, the gateway's /v1/models cards say (their `root`; the stub's is the name).
    bare = dataclasses.replace(scenario, assistants=[AssistantShare("expert"), AssistantShare("helper")])
    assert direct_models(bare, None, url) == {"expert": "expert", "helper": "helper"}
    with pytest.raises(ScenarioError, match="expert"):
        direct_models(bare, None, None)


def test_scenarios(scenario_file: Path, tmp_path: Path) -> None:
    demo = load_scenarios()
    assert list(demo) == ["demo-skewed", "demo-uniform", "demo-no-retrieval", "demo-fixed-length", "demo-unstreamed"]
    assert demo["demo-fixed-length"].extra == {"min_tokens": 64} and not demo["demo-unstreamed"].stream
    skewed = load_scenario(scenario_file)
    first = [(s.assistant, s.messages) for s in islice(requests(skewed), 400)]
    assert first == [(s.assistant, s.messages) for s in islice(requests(skewed), 400)]  # reproducible
    counts = Counter(a for a, _ in first)
    assert 2.2 < counts["expert"] / counts["helper"] < 4  # weights 3:1
    uniform = Counter(s.assistant for s in islice(requests(load_scenario(scenario_file, "whole")), 400))
    assert 0.75 < uniform["expert"] / uniform["helper"] < 1.33
    prompts = conversations(skewed)
    assert len(prompts) == 40 + 13 and sum(len(p) == 3 for p in prompts) == 13  # 25 % three-turn follow-ups
    spec = next(requests(load_scenario(scenario_file, "whole")))
    assert spec.body("m") == {"model": "m", "messages": spec.messages, "max_tokens": 4}
    bad = tmp_path / "bad.yaml"
    bad.write_text("defaults: {assistants: [a], colour: red}\n")
    with pytest.raises(ScenarioError, match="unknown keys"):
        load_scenarios(bad)
    with pytest.raises(ScenarioError, match="no scenario"):
        load_scenario(scenario_file, "missing")

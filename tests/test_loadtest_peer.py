"""loadtest.peer's parsing and arithmetic: /proc stat fields, added latency and the ratio, the block order."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from loadtest import peer
from loadtest.stubrun import Samples


def test_stat_ticks_reads_utime_and_stime_past_a_command_name_with_spaces_and_parentheses() -> None:
    # pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime ...
    stat = "4242 (uvicorn (w) 1) S 1 4242 4242 0 -1 4194560 100 0 0 0 731 269 0 0 20 0 7 0"
    assert peer.stat_ticks(stat) == 731 + 269


def test_tree_cpu_seconds_counts_the_children() -> None:
    spin = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\ntime.sleep(30)"
    parent = subprocess.Popen(
        [sys.executable, "-c", f"import subprocess, sys; subprocess.run([sys.executable, '-c', {spin!r}])"]
    )
    try:
        deadline = time.monotonic() + 20
        while (seconds := peer.tree_cpu_seconds(parent.pid)) is None or seconds < 0.3:
            assert time.monotonic() < deadline, seconds
            time.sleep(0.05)
        own = peer.stat_ticks(Path(f"/proc/{parent.pid}/stat").read_text()) / os.sysconf("SC_CLK_TCK")
        assert seconds >= own + 0.25  # the child's spin is in the total, not in the parent's own ticks
    finally:
        parent.kill()
        parent.wait()
    assert peer.tree_cpu_seconds(parent.pid) is None  # reaped: nothing to read


def _samples(ms: list[float], cpu: float | None = None, busy: float = 1.0) -> Samples:
    return Samples(total=[m / 1000 for m in ms], busy=busy, cpu=cpu)


def test_summarise_added_latency_cpu_per_request_and_the_ratio() -> None:
    samples = {
        "direct": _samples([1.0] * 100, cpu=0.05),
        "lorag": _samples([3.0] * 99 + [5.0], cpu=0.2),
        "litellm": _samples([21.0] * 99 + [41.0], cpu=1.0, busy=2.0),
    }
    row = peer.summarise({"concurrency": 16, "stream": False}, samples)
    assert row["lorag_added_p50_ms"] == pytest.approx(2.0)
    assert row["litellm_added_p50_ms"] == pytest.approx(20.0)
    assert row["ratio_added_p50"] == pytest.approx(0.1)
    # p99 of 99 x a and one b interpolates between them at rank 98.01 of 0..99
    assert row["lorag_added_p99_ms"] == pytest.approx(3.0 + 0.01 * 2.0 - 1.0)
    assert row["litellm_added_p99_ms"] == pytest.approx(21.0 + 0.01 * 20.0 - 1.0)
    assert row["ratio_added_p99"] == pytest.approx(2.02 / 20.2)
    assert row["lorag_cpu_ms_per_request"] == pytest.approx(2.0)
    assert row["litellm_cpu_ms_per_request"] == pytest.approx(10.0)
    assert row["ratio_cpu"] == pytest.approx(0.2)
    assert row["litellm_rps"] == pytest.approx(50.0)
    assert "| 16 | no | 2.00 / 2.02 | 20.00 / 20.20 | 0.100 | 2.00 / 10.00 | 100 / 100 / 50 | 0+0+0 |" in peer.table(
        [row]
    )


def test_a_peer_that_adds_nothing_gives_no_ratio() -> None:
    same = _samples([1.0] * 10)
    row = peer.summarise(
        {"concurrency": 1, "stream": False}, {"direct": same, "lorag": _samples([2.0] * 10), "litellm": same}
    )
    assert math.isnan(float(row["ratio_added_p99"]))  # type: ignore[arg-type]


def test_every_path_takes_every_place_in_the_order() -> None:
    orders = [peer._order(i) for i in range(3)]
    assert all(sorted(o) == sorted(peer.PATHS) for o in orders)
    for place in range(3):
        assert {o[place] for o in orders} == set(peer.PATHS)


def test_litellm_config_routes_the_stub_model_to_the_stub() -> None:
    config = yaml.safe_load(peer.litellm_config("http://127.0.0.1:9999"))
    (model,) = config["model_list"]
    assert model["model_name"] == "stub-model"
    assert model["litellm_params"] == {
        "model": "openai/stub-model",
        "api_base": "http://127.0.0.1:9999/v1",
        "api_key": "none",
    }

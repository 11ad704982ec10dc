"""loadtest.workers' arithmetic and /proc reading: requests/s, percentiles, memory per process."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from loadtest import workers
from loadtest.stubrun import Samples


def test_summarise_rate_percentiles_retrieval_and_cpu_per_request() -> None:
    samples = Samples(total=[i / 1000 for i in range(1, 101)], retrieval=[0.002] * 99 + [0.102], busy=4.0, cpu=2.0)
    row = workers.summarise(2, samples, [512.0, 600.25])
    assert row["rps"] == pytest.approx(25.0)
    assert row["p50_ms"] == pytest.approx(50.5)
    assert row["p99_ms"] == pytest.approx(99.01)
    assert row["retrieval_p50_ms"] == pytest.approx(2.0)
    assert row["retrieval_p99_ms"] == pytest.approx(3.0)  # 2 + (102 - 2) * 0.01
    assert row["cpu_ms_per_request"] == pytest.approx(20.0)
    assert "| 2 | 25.0 | 50.5 / 99.0 | 2.0 / 3.0 | 20.0 | 512, 600 | 0 |" in workers.table([row])


def test_rss_and_children_from_proc() -> None:
    own = workers.rss_mib(os.getpid())
    assert own is not None and own > 10
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert child.pid in workers.worker_pids(os.getpid())
    finally:
        child.kill()
        child.wait()
    assert workers.rss_mib(child.pid) is None

"""A local stack for a load run without a GPU: the stub upstream, and the gateway (`lorag serve`) in front of it.

The stub serves one adapter per scenario assistant (named as the assistant) over its base model; the gateway's
manifest routes each assistant to its adapter, with retrieval as the scenario says (on: the demo catalog is first
ingested into a temporary local Qdrant). The helpers that start and wait for the processes are loadtest/overhead's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from loadtest import stubrun
from loadtest.scenario import Scenario
from loadtest.stubrun import HOST, STUB_MODEL, stub_command


@dataclass(frozen=True)
class StubTiming:
    """How the stub answers: milliseconds to the first token, tokens per second (0: at once), answer length."""

    ttft_ms: float = 0.0
    tokens_per_s: float = 0.0
    tokens: int = 16


@dataclass(frozen=True)
class LocalStack:
    """The started stack's base URLs and process ids."""

    gateway_url: str
    direct_url: str
    pids: dict[str, int]


def manifest(scenario: Scenario, retrieval: bool) -> str:
    """The gateway's assistants: each scenario assistant on its own stub adapter."""
    lines = [f"base_model: {STUB_MODEL}", "assistants:"]
    for a in scenario.assistants:
        lines.append(
            f"  - {{name: {a.name}, adapter: {a.name}, retrieval: {{enabled: {str(retrieval).lower()}, top_k: 4}}, "
            f"max_tokens: {max(scenario.max_tokens, 16)}}}"
        )
    return "\n".join(lines) + "\n"


@contextmanager
def local_stack(scenario: Scenario, timing: StubTiming, log_dir: Path | None = None) -> Iterator[LocalStack]:
    """Start the stub and the gateway, yield their URLs, stop both at the end."""
    python = sys.executable
    with tempfile.TemporaryDirectory(prefix="lorag-load-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        logs = log_dir or work
        logs.mkdir(parents=True, exist_ok=True)
        (work / "assistants.yaml").write_text(manifest(scenario, scenario.retrieval))
        qdrant = work / "qdrant"
        if scenario.retrieval:
            from retrieval.demo_catalog import write_demo_catalog

            catalog = write_demo_catalog(work / "catalog.jsonl")
            ingest = [python, "-m", "lorag", "catalog", "ingest", str(catalog), "--qdrant-path", str(qdrant)]
            subprocess.run([*ingest, "--quiet"], check=True, stdout=subprocess.DEVNULL)
        ports = {"direct": stubrun.free_port(), "gateway": stubrun.free_port()}
        stub = [*stub_command(python), "--port", str(ports["direct"]), "--model", STUB_MODEL]
        stub += ["--ttft-ms", str(timing.ttft_ms), "--tokens-per-s", str(timing.tokens_per_s)]
        stub += ["--tokens", str(timing.tokens)]
        for a in scenario.assistants:
            stub += ["--adapter", a.name]
        direct_url = f"http://{HOST}:{ports['direct']}"
        pids = {"direct": stack.enter_context(stubrun.process(stub, logs / "stub.log", f"{direct_url}/health"))}
        gateway_url = f"http://{HOST}:{ports['gateway']}"
        gateway = [python, "-m", "lorag", "serve", "--host", HOST, "--port", str(ports["gateway"])]
        gateway += ["--upstream-url", direct_url, "--assistants", str(work / "assistants.yaml")]
        gateway += ["--qdrant-path", str(qdrant), "--no-access-log", "--log-level", "warning"]
        # Its adapter state file in the temporary directory, not the checkout; one embedding thread (retrieval on)
        # leaves the CPU to the servers.
        env = {"LORAG_EMBEDDING_THREADS": "1", **os.environ, "LORAG_STATE_FILE": str(work / "adapters.json")}
        ready = f"{gateway_url}/ready"
        pids["gateway"] = stack.enter_context(stubrun.process(gateway, logs / "gateway.log", ready, env=env))
        yield LocalStack(gateway_url, direct_url, pids)

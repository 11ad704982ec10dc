"""Retrieval settings, read from `LORAG_*` environment variables (the gateway nests or passes them)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

Fusion = Literal["rrf", "dbsf"]
StoreKind = Literal["qdrant", "edge"]


class RetrievalSettings(BaseSettings):
    """Where the catalog lives and how it is searched."""

    model_config = SettingsConfigDict(env_prefix="LORAG_", extra="ignore")

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
    fusion: Fusion = Field(default="dbsf", description="How dense and lexical results fuse: rrf or dbsf.")
    prefetch_limit: int = Field(default=50, ge=1, description="Candidates per side before fusion.")
    unknown_min_similarity: float = Field(
        default=0.45,
        description="A question naming no model code or brand is 'not in the catalog' when the best dense "
        "cosine similarity is below this.",
    )

"""Gateway settings: `LORAG_*` environment variables and a `.env` file, read once in `create_app`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode

from retrieval.settings import RetrievalSettings

DEFAULT_MANIFEST = Path(__file__).with_name("assistants.yaml")


class GatewaySettings(RetrievalSettings):
    """Everything `lorag serve` needs; the retrieval fields (LORAG_QDRANT_URL, ...) are inherited."""

    host: str = Field(default="127.0.0.1", description="Interface the gateway listens on.")
    port: int = Field(default=8000, ge=1, le=65535, description="Port the gateway listens on.")
    assistants: Path = Field(default=DEFAULT_MANIFEST, description="The assistants manifest (YAML).")
    upstream_url: str = Field(
        default="http://127.0.0.1:8001", description="The vLLM OpenAI server, without the /v1 suffix."
    )
    upstream_api_key: SecretStr | None = Field(default=None, description="Bearer token vLLM expects, if any.")
    upstream_connect_timeout: float = Field(default=5.0, gt=0, description="Seconds to open a connection.")
    upstream_read_timeout: float = Field(
        default=300.0,
        gt=0,
        description="Seconds to wait for the next byte from vLLM (a queued request can wait long for its first token).",
    )
    upstream_max_connections: int = Field(default=256, ge=1, description="Connection pool size towards vLLM.")
    max_body_bytes: int = Field(default=2 * 1024 * 1024, ge=1024, description="Largest request body accepted.")
    retrieval_concurrency: int = Field(
        default=4, ge=1, description="Retrievals run at once in worker threads (embedding is CPU-bound)."
    )
    retrieval_timeout: float = Field(
        # Generous on purpose: on a small CPU host the embedding competes with vLLM for the same cores and can take
        # seconds under load; the deadline exists to cut a hung store loose, not to police a busy machine.
        default=10.0,
        gt=0,
        description=(
            "Seconds a request may spend on retrieval (waiting for a slot, embedding, the store's search); past it "
            "the assistant's retrieval.on_failure applies: fail (503 retrieval_unavailable) or degrade (no facts)."
        ),
    )
    access_log: bool = Field(default=True, description="Log one line per request (uvicorn's access log).")
    engines: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Several vLLM servers, comma-separated (http://a:8000,http://b:8000); unset: upstream_url alone.",
    )
    admin_key: SecretStr | None = Field(
        default=None, description="Bearer token of the /admin API (adapter hot-swap); unset turns the API off."
    )
    api_keys_file: Path | None = Field(
        default=None,
        description=(
            "API keys of the chat API (JSON/YAML written by `lorag keys`; hashed, never in clear), re-read when it "
            "changes; unset with LORAG_API_KEYS unset too: the chat API is open to anyone who reaches the port."
        ),
    )
    api_keys: SecretStr | None = Field(
        default=None, description="API keys inline: the keys file's JSON, e.g. from a secret store."
    )
    adapter_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list, description="Directories new adapter versions may be loaded from, comma-separated."
    )
    state_file: Path | None = Field(
        default=Path(".lorag/adapters.json"),
        description="Where the adapters' desired state (versions, active, retired) is kept across restarts.",
    )
    redis_url: SecretStr | None = Field(
        default=None,
        description=(
            "Redis shared by several gateway replicas (redis://host:6379/0): the adapters' desired state and the "
            "keys' rate-limit counters live there instead of LORAG_STATE_FILE and process memory."
        ),
    )
    redis_prefix: str = Field(default="lorag:", description="Prefix of every Redis key this gateway uses.")
    reconcile_interval: float = Field(
        default=30.0, gt=0, description="Seconds between comparisons of each engine's adapters with the desired state."
    )
    drain_timeout: float = Field(
        default=600.0, gt=0, description="Seconds a replaced version may finish in-flight requests before unloading."
    )
    admission_max_wait: float = Field(
        default=20.0,
        ge=0,
        description=(
            "Admission control: refuse a request (503 with Retry-After) when the engine's estimated wait, its "
            "requests outstanding over its measured completion rate, would exceed this many seconds; 0 turns it off."
        ),
    )
    admission_min_inflight: int = Field(
        default=8,
        ge=1,
        description="Requests each engine is always admitted, also before its completion rate has been measured.",
    )
    admission_max_inflight: int = Field(
        default=0, ge=0, description="A fixed cap on each engine's outstanding requests besides the wait; 0: none."
    )
    max_lora_rank: int = Field(
        default=16, ge=1, description="The engines' --max-lora-rank: higher-rank versions are refused before loading."
    )

    @field_validator("upstream_url")
    @classmethod
    def _origin(cls, url: str) -> str:
        # People paste the OpenAI base URL (".../v1"); the gateway adds the paths itself.
        url = url.rstrip("/")
        return url.removesuffix("/v1")

    @field_validator("admin_key", "upstream_api_key", "api_keys", "api_keys_file", "redis_url", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        # Compose passes `LORAG_ADMIN_KEY: ${LORAG_ADMIN_KEY:-}` as an empty string when unset; an empty key must
        # leave the admin API off, not open it to an empty bearer token.
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("engines", "adapter_roots", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("engines")
    @classmethod
    def _origins(cls, urls: list[str]) -> list[str]:
        return [cls._origin(url) for url in urls]

    def engine_urls(self) -> list[str]:
        """Every vLLM server the gateway routes to."""
        return self.engines or [self.upstream_url]

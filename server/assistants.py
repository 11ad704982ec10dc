"""The assistants manifest (YAML) and the registry that resolves a request's `model` to an assistant.

An assistant is what a client names in `model`: a LoRA adapter served by vLLM (or the base model), a persona,
how catalog facts are retrieved and shown, and its engine options: sampling defaults, chat-template arguments
(Qwen3's `enable_thinking`) and a cap on completion tokens, each of which a client may override unless the
manifest says otherwise. Facts are always rendered by `retrieval.facts`, the layout the adapters were trained on;
the manifest only chooses what goes in.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from retrieval.filters import SearchFilters
from server.errors import InvalidRequest, ModelNotFound
from server.guard import GuardConfig

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")


class ManifestError(ValueError):
    """The manifest cannot be read or does not describe a valid set of assistants."""


class RetrievalConfig(BaseModel):
    """Which facts an assistant is shown."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    top_k: int = Field(default=4, ge=1, le=20, description="Products in the facts block.")
    filters: SearchFilters | None = Field(default=None, description="Constraints on every product shown.")
    unknown_signal: bool = Field(
        default=True, description="Add the NOT IN CATALOG line when the question names a product we lack."
    )
    unknown_max_facts: int = Field(
        default=2,
        ge=0,
        le=20,
        description="Products kept next to NOT IN CATALOG: the adapters were trained with at most two there.",
    )
    context_turns: int = Field(
        default=2, ge=0, le=10, description="Earlier user turns searched for the product an 'it' refers to."
    )
    on_failure: Literal["fail", "degrade"] = Field(
        default="fail",
        description=(
            "When the catalog store fails: `fail` answers 503 retrieval_unavailable; `degrade` answers with an empty "
            "facts block, `sources: []` and `x-lorag-retrieval: skipped`."
        ),
    )


class RequestLimits(BaseModel):
    """Caps on what one request to this assistant may carry (checked by server.limits; unset: only the global ones)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_body_bytes: int | None = Field(default=None, ge=1, description="Largest request body (413 above).")
    max_messages: int | None = Field(default=None, ge=1, description="Most messages in a request (400 above).")
    max_message_chars: int | None = Field(default=None, ge=1, description="Longest message text (400 above).")
    max_tokens: int | None = Field(
        default=None, ge=1, description="Largest max_tokens a client may ask (400 above; unset: capped silently)."
    )


class Sampling(BaseModel):
    """Defaults for the fields a client leaves unset."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=-1)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    repetition_penalty: float | None = Field(default=None, gt=0, le=2)
    seed: int | None = None
    stop: list[str] | None = None

    def defaults(self) -> dict[str, Any]:
        """The defaults that are set."""
        return self.model_dump(exclude_none=True)


class ClientOverrides(BaseModel):
    """What a client may change of the assistant's engine options. A locked option is not silently replaced: a
    request that asks for another value is a 400 naming the field, so the client learns why it is not obeyed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sampling: bool = Field(default=True, description="Values other than the sampling defaults that are set.")
    chat_template_kwargs: bool = Field(default=True, description="Values other than the manifest's for its keys.")
    max_tokens: bool = Field(default=True, description="A completion limit below the cap (false: always the cap).")


class Assistant(BaseModel):
    """One assistant of the manifest."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="What clients send as `model`.")
    adapter: str | None = Field(description="The LoRA adapter's served name in vLLM; null for the base model.")
    description: str = ""
    persona: str | None = Field(default=None, description="Put before the grounding rules in the system message.")
    retrieval: RetrievalConfig = Field(default_factory=RetrievalConfig)
    sampling: Sampling = Field(default_factory=Sampling)
    max_tokens: int = Field(default=512, ge=1, description="Cap on completion tokens; also the default.")
    chat_template_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="Arguments for the model's chat template, e.g. {enable_thinking: false} for Qwen3.",
    )
    client_overrides: ClientOverrides = Field(default_factory=ClientOverrides)
    limits: RequestLimits = Field(default_factory=RequestLimits)
    guard: GuardConfig = Field(default_factory=GuardConfig, description="Truthfulness guard (server/guard.py).")

    @field_validator("name", "adapter")
    @classmethod
    def _plain_name(cls, value: str | None) -> str | None:
        if value is not None and not _NAME.match(value):
            raise ValueError(f"{value!r} is not a model name (letters, digits and ._:/- only, no spaces)")
        return value

    def engine_fields(self, forwarded: dict[str, Any], wanted_max_tokens: int | None) -> dict[str, Any]:
        """vLLM's request fields from the client's forwarded ones and this assistant's options: the client's
        values win where it may override, chat-template arguments merge key by key, and the completion limit is
        the client's up to the cap (InvalidRequest naming the field where a locked option is asked to change)."""
        locks = self.client_overrides
        defaults = self.sampling.defaults()
        if not locks.sampling:
            _refuse_changes(defaults, forwarded, prefix="")
        fields = {**defaults, **forwarded}
        client_kwargs = forwarded.get("chat_template_kwargs")
        if self.chat_template_kwargs or client_kwargs is not None:
            if not isinstance(client_kwargs, dict | None):
                raise InvalidRequest("chat_template_kwargs: must be an object", param="chat_template_kwargs")
            client_kwargs = client_kwargs or {}
            if not locks.chat_template_kwargs:
                _refuse_changes(self.chat_template_kwargs, client_kwargs, prefix="chat_template_kwargs.")
            fields["chat_template_kwargs"] = {**self.chat_template_kwargs, **client_kwargs}
        if not locks.max_tokens and wanted_max_tokens not in (None, self.max_tokens):
            raise InvalidRequest(
                f"max_tokens: this assistant always answers with up to {self.max_tokens} tokens; leave it unset",
                param="max_tokens",
            )
        fields["max_completion_tokens"] = min(wanted_max_tokens or self.max_tokens, self.max_tokens)
        return fields


def _refuse_changes(fixed: dict[str, Any], asked: dict[str, Any], prefix: str) -> None:
    """An InvalidRequest for the first key of `fixed` that `asked` sets to another value."""
    for key, value in fixed.items():
        if key in asked and asked[key] != value:
            raise InvalidRequest(
                f"{prefix}{key}: this assistant fixes it to {value!r}; leave it unset", param=f"{prefix}{key}"
            )


class Manifest(BaseModel):
    """The whole file: the base model vLLM serves and the assistants over it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_model: str = Field(description="vLLM's served name of the base model (--served-model-name).")
    assistants: list[Assistant] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> Manifest:
        seen: set[str] = set()
        for assistant in self.assistants:
            if assistant.name in seen:
                raise ValueError(f"assistant {assistant.name!r} is defined twice")
            seen.add(assistant.name)
        return self


def load_manifest(path: Path) -> Manifest:
    """Read and validate a manifest, with errors that name the file and the offending entry."""
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ManifestError(f"cannot read assistants manifest {path}: {exc}") from exc
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'manifest'}: {e['msg']}" for e in exc.errors())
        raise ManifestError(f"invalid assistants manifest {path}: {problems}") from exc


class Registry:
    """Assistants by name, and the names vLLM serves them under."""

    def __init__(self, manifest: Manifest) -> None:
        self.base_model = manifest.base_model
        self._by_name = {a.name: a for a in manifest.assistants}

    @classmethod
    def from_file(cls, path: Path) -> Registry:
        return cls(load_manifest(path))

    def __iter__(self) -> Iterator[Assistant]:
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)

    def resolve(self, name: str) -> Assistant:
        """The assistant a request names, or a 404 listing the ones that exist."""
        assistant = self._by_name.get(name)
        if assistant is None:
            known = ", ".join(sorted(self._by_name))
            raise ModelNotFound(f"The model {name!r} does not exist; available: {known}", param="model")
        return assistant

    def boot_served_name(self, assistant: Assistant) -> str:
        """The model name to send vLLM: the adapter's, or the base model's."""
        return assistant.adapter or self.base_model

    @property
    def needs_retrieval(self) -> bool:
        """Whether any assistant retrieves (otherwise Qdrant and the embedder are not opened)."""
        return any(a.retrieval.enabled for a in self)

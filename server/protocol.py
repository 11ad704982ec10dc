"""The OpenAI wire format the gateway accepts and returns (the parts it reads; answers are relayed from vLLM).

A request is validated strictly: an unknown field is a 400 naming it, as OpenAI does, rather than a silent
drop. Fields vLLM supports are forwarded as the client sent them; a few OpenAI fields that mean nothing here
(`store`, `metadata`, `service_tier`) are accepted so standard clients work, and not forwarded.

Text must be valid Unicode. JSON can spell a lone UTF-16 surrogate (`"\\ud800"`), which Python decodes into a
string that no UTF-8 encoder, tokenizer or vLLM accepts; such a request is a 400 naming the field, before any
part of the gateway reads it.
"""

from __future__ import annotations

import re
import time
from typing import Any, Literal, TypedDict

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]

# Fields the gateway consumes itself (model, messages, stream) or rewrites (token limits, stream options).
_GATEWAY_FIELDS = frozenset({"model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens"})
_NOT_FORWARDED = frozenset({"store", "metadata", "service_tier"})
_SURROGATE = re.compile("[\ud800-\udfff]")
INVALID_UNICODE = "invalid_unicode"


def reject_lone_surrogates(data: Any) -> Any:
    """`data` unchanged, or a validation error naming a string (key or value) that holds a lone
    surrogate. Iterative: a deeply nested body must not exhaust the stack."""
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, str):
            if _SURROGATE.search(value):
                raise PydanticCustomError(
                    INVALID_UNICODE,
                    "the text holds a lone UTF-16 surrogate (U+D800-U+DFFF), which is not valid Unicode",
                    {"field": where or "body"},
                )
        elif isinstance(value, dict):
            for key, item in value.items():
                stack.append((f"{where}.{key}" if where else str(key), key))
                stack.append((f"{where}.{key}" if where else str(key), item))
        elif isinstance(value, list):
            stack.extend((f"{where}.{i}" if where else str(i), item) for i, item in enumerate(value))
    return data


class ContentPart(BaseModel):
    """One part of a multi-part message; only text parts are read, the others travel unchanged."""

    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    """One conversation turn. Extra fields (tool_calls, tool_call_id, ...) are forwarded as sent."""

    model_config = ConfigDict(extra="allow")

    role: Role
    content: str | list[ContentPart] | None = None
    name: str | None = None

    def text(self) -> str:
        """The message's text: the string, or its text parts joined."""
        if isinstance(self.content, str):
            return self.content
        if not self.content:
            return ""
        return "\n".join(part.text for part in self.content if part.type == "text" and part.text)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_usage: bool | None = None
    continuous_usage_stats: bool | None = Field(default=None, description="vLLM: usage on every chunk.")


class ChatCompletionRequest(BaseModel):
    """POST /v1/chat/completions."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, description="The assistant's name (GET /v1/models).")
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    # OpenAI sampling and output fields, forwarded to vLLM as given.
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    n: int | None = Field(default=None, ge=1, le=16)
    response_format: dict[str, Any] | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    user: str | None = None
    # vLLM's sampling extensions (the OpenAI SDK sends them in extra_body).
    top_k: int | None = Field(default=None, ge=-1)
    min_p: float | None = Field(default=None, ge=0, le=1)
    repetition_penalty: float | None = Field(default=None, gt=0, le=2)
    min_tokens: int | None = Field(default=None, ge=0)
    ignore_eos: bool | None = None
    stop_token_ids: list[int] | None = None
    # Accepted for compatibility, not forwarded.
    store: bool | None = None
    metadata: dict[str, str] | None = None
    service_tier: str | None = None

    _valid_unicode = model_validator(mode="before")(reject_lone_surrogates)

    @model_validator(mode="after")
    def _stream_options_need_stream(self) -> ChatCompletionRequest:
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed when stream is true")
        return self

    def requested_max_tokens(self) -> int | None:
        """The client's completion limit, whichever of the two OpenAI names it used."""
        return self.max_completion_tokens or self.max_tokens

    def forwarded(self) -> dict[str, Any]:
        """The sampling and output fields the client set, as vLLM takes them."""
        return self.model_dump(exclude_none=True, exclude_unset=True, exclude=set(_GATEWAY_FIELDS | _NOT_FORWARDED))


class Source(TypedDict):
    """A catalog product the answer was grounded on (the `sources` extension field)."""

    id: str
    name: str
    score: float


class ModelCard(BaseModel):
    """One assistant in GET /v1/models; `parent` is the base model, `root` what vLLM serves it as."""

    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=lambda: int(time.time()))
    owned_by: str = "lorag"
    root: str
    parent: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]

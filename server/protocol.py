"""The OpenAI wire format the gateway accepts and returns (the parts it reads; answers are relayed from vLLM).

Forwarding policy: the gateway validates only the fields it owns (`model`, `messages`, `stream`,
`stream_options`, the token limits it caps, and `n`, whose choices the relay counts); every other field goes to
vLLM exactly as the client sent it, and vLLM's own 400 comes back naming the field. An allow-list would refuse what
current OpenAI SDKs, LangChain and vLLM's extensions send (`reasoning_effort`, `chat_template_kwargs`,
`structured_outputs`, ...) and would lag every vLLM release; vLLM, LiteLLM and OpenRouter pass unknown fields on.
What is wrong for any engine is still a 400 here (an unknown role, no messages, a limit below 1). A few OpenAI
fields that mean nothing here (`store`, `metadata`, `service_tier`) are accepted and not forwarded.

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
    """Read by the gateway (it always asks vLLM for usage); options it does not know are forwarded."""

    model_config = ConfigDict(extra="allow")

    include_usage: bool | None = None
    continuous_usage_stats: bool | None = Field(default=None, description="vLLM: usage on every chunk.")


class ChatCompletionRequest(BaseModel):
    """POST /v1/chat/completions: the fields the gateway owns, typed; every other field kept as sent."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, description="The assistant's name (GET /v1/models).")
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    # Forwarded, but the relay counts the choices to know when a stream is over; 16: the gateway's cap on the
    # work one request may ask of the engine.
    n: int | None = Field(default=None, ge=1, le=16)

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
        """Every field the client sent that the gateway does not own, exactly as sent. A null is left out: it
        means "the default" in OpenAI's API, and the assistant's default must not be replaced by vLLM's."""
        extra = {k: v for k, v in (self.model_extra or {}).items() if v is not None and k not in _NOT_FORWARDED}
        if self.n is not None:
            extra["n"] = self.n
        return extra


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

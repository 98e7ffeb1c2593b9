"""Request and response shapes of the OpenAI-compatible routes under `/v1`.

They follow OpenAI's API reference for the fields this service implements;
a field OpenAI has and this service does not (tools, logprobs, ...) is
refused with a 400 that names it, rather than silently ignored. `model` is the
served name (the newest version) or `<name>@v<K>` (version K, 0 = the base).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

MAX_CHOICES = 8  # `n`: each choice is a full generation
MAX_STOP = 4  # OpenAI's own limit on stop strings
MAX_MESSAGES = 64
MAX_CONTENT = 32_000  # characters per message; the model's context is the real limit

Role = Literal["system", "developer", "user", "assistant"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextPart(Strict):
    type: Literal["text"]
    text: str


class ChatMessage(Strict):
    """A turn. `developer` is OpenAI's newer name for `system` and is read as one."""

    role: Role
    content: Annotated[str, StringConstraints(max_length=MAX_CONTENT)] | list[TextPart]
    name: str | None = None

    @property
    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)

    @property
    def template_role(self) -> str:
        return "system" if self.role == "developer" else self.role


class StreamOptions(Strict):
    include_usage: bool = False


Stop = Annotated[str, StringConstraints(min_length=1, max_length=200)]


class _Sampling(Strict):
    model: Annotated[str, StringConstraints(min_length=1, max_length=300)]
    max_tokens: int | None = Field(None, ge=1, description="default: the service's cap (max_new_tokens setting)")
    temperature: float = Field(1.0, ge=0.0, le=2.0, description="0 = greedy (OpenAI's default is 1)")
    top_p: float = Field(1.0, ge=0.0, le=1.0, description="0 = greedy")
    # 2**53 - 1: the largest integer every JSON parser reads exactly (as on POST /generate)
    seed: int | None = Field(None, ge=0, le=2**53 - 1, description="the same seed gives the same answer on the same version")
    stop: Stop | Annotated[list[Stop], Field(max_length=MAX_STOP)] | None = Field(
        None, description=f"up to {MAX_STOP} strings; the answer ends before the first"
    )
    n: int = Field(1, ge=1, le=MAX_CHOICES, description="choices; choice i samples with seed + i")
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, description="accepted, not used")
    # The schema states it too (minimum = maximum = 0), so a client sees it before it asks.
    presence_penalty: float = Field(0.0, ge=0.0, le=0.0, description="only 0 is implemented")
    frequency_penalty: float = Field(0.0, ge=0.0, le=0.0, description="only 0 is implemented")

    @property
    def stops(self) -> tuple[str, ...]:
        return () if self.stop is None else (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_completion_tokens: int | None = Field(None, ge=1, description="OpenAI's newer name for max_tokens")

    @field_validator("messages")
    @classmethod
    def _has_a_question(cls, value: list[ChatMessage]):
        if not any(m.role == "user" and m.text.strip() for m in value):
            raise ValueError("messages need at least one user message with some text")
        return value

    @property
    def question(self) -> str:
        """The last user message: what routing and chat-stated edits key on."""
        return next(m.text for m in reversed(self.messages) if m.role == "user")


class CompletionRequest(_Sampling):
    prompt: Annotated[str, StringConstraints(min_length=1, max_length=MAX_CONTENT)] | Annotated[
        list[Annotated[str, StringConstraints(min_length=1, max_length=MAX_CONTENT)]], Field(min_length=1, max_length=MAX_CHOICES)
    ]
    max_tokens: int | None = Field(16, ge=1, description="OpenAI's default for completions is 16")
    echo: bool = Field(False, description="put the prompt in front of each answer")

    @property
    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


FinishReason = Literal["stop", "length"]


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: FinishReason
    logprobs: None = None


class _Answer(BaseModel):
    id: str
    object: str  # each answer type fixes it
    created: int
    model: str = Field(description="<name>@v<K>: the version that answered")
    system_fingerprint: str = Field(description="the first 16 hex digits of the version's state_sha256")
    usage: Usage | None = None


class ChatCompletion(_Answer):
    object: Literal["chat.completion"] = "chat.completion"
    choices: list[ChatChoice]


class ChatDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(BaseModel):
    index: int
    delta: ChatDelta
    finish_reason: FinishReason | None = None
    logprobs: None = None


class ChatCompletionChunk(_Answer):
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    choices: list[ChatChunkChoice]


class CompletionChoice(BaseModel):
    index: int
    text: str
    finish_reason: FinishReason | None
    logprobs: None = None


class Completion(_Answer):
    object: Literal["text_completion"] = "text_completion"
    choices: list[CompletionChoice]


class ModelCard(BaseModel):
    id: str = Field(description="<name> (the newest version) or <name>@v<K>")
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "instructedit"
    version: int = Field(description="the version this id answers with now")
    active_edits: int = Field(description="edits in force in that version")
    state_sha256: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class OpenAIErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIError(BaseModel):
    """The error shape on `/v1` (what OpenAI's SDKs parse)."""

    error: OpenAIErrorBody

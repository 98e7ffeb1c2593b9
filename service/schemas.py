"""Request and response shapes. `*Create` is what a client sends, `*Public`
what it gets back, so store columns never leak into responses by accident."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, StringConstraints, Tag, model_validator

from editor_core import instructions

from .records import DEFAULT_TASK, EditStatus
from .store import EditRow, VersionRow

MAX_TEXT = 2000  # characters per prompt or answer; edits are about one fact
MAX_PAIRS = 32  # rephrase prompts, locality or portability pairs per record
MAX_BATCH = 64  # records in one batch edit
DEFAULT_NEW_TOKENS = 32
CURSOR_PATTERN = r"^(s[0-9]{1,18})?$"  # EditPage.next_cursor: edits older than this seq

Text = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEXT, pattern=r"\S")]
ShortText = Annotated[str, StringConstraints(max_length=200)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _json_number(value: Any) -> Any:
    """JSON types as the schema states them: `false` or `"3"` is not a number (pydantic's
    lax mode would take both), while 7.0 is an integer, as in JSON Schema (strict mode would refuse it)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("must be a JSON number")
    return value


Int = Annotated[int, BeforeValidator(_json_number)]  # constraints go before the validator, or the schema loses them
Float = Annotated[float, BeforeValidator(_json_number)]
Bool = Annotated[bool, Field(strict=True)]


class PairIn(Strict):
    prompt: Text
    answer: Text


class _EditFields(Strict):
    """What an edit may carry besides its question and answer."""

    subject: Annotated[str, StringConstraints(max_length=MAX_TEXT)] | None = Field(
        None,
        description="what the fact is about, as the prompt names it; routed: a question runs on this edit only if it "
        "names the subject too. Blank: guessed from the prompt's capitalized name (editor_core.routing.guess_subject)",
    )
    task: ShortText | None = Field(
        None, description=f"instruction task; default {DEFAULT_TASK!r}", json_schema_extra={"enum": [*instructions.tasks(), None]}
    )
    instruction: Annotated[str, StringConstraints(max_length=MAX_TEXT, pattern=r"^[^\r\n]*$")] | None = Field(
        None, description="one line describing the edit, for instructed editors (EditRecord.extra['instruction']); blank: the task's own"
    )
    rephrase_prompts: list[Text] = Field(default_factory=list, max_length=MAX_PAIRS)
    locality: list[PairIn] = Field(default_factory=list, max_length=MAX_PAIRS)
    portability: list[PairIn] = Field(default_factory=list, max_length=MAX_PAIRS)


class EditCreate(_EditFields):
    """One fact to edit: `prompt` should be answered with `target_new`."""

    prompt: Text
    target_new: Text
    # Left out of stored records when "prompt", so requests made before it existed keep their hash (idempotency).
    asked_as: Literal["prompt", "chat"] = Field(
        "prompt",
        exclude_if=lambda v: v == "prompt",
        description="`chat` when the edit came as a conversation: `prompt` is then the user's question, plain",
    )


class ChatTurn(Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: Annotated[str, StringConstraints(max_length=8 * MAX_TEXT)]


CHAT_SHAPE = "an edit as chat is optional system turns, then one user turn (the question), then one assistant turn (the new answer)"


class EditChatCreate(_EditFields):
    """One fact to edit, stated as chat: the user's question and the answer the
    assistant should now give. It is stored as an `EditCreate` whose prompt is
    the question (plain text) and target the answer, with `asked_as: chat`."""

    messages: list[ChatTurn] = Field(min_length=2, max_length=8, description=CHAT_SHAPE)

    @model_validator(mode="after")
    def _question_then_answer(self) -> "EditChatCreate":
        roles = [m.role for m in self.messages]
        if roles[-2:] != ["user", "assistant"] or any(r not in ("system", "developer") for r in roles[:-2]):
            raise ValueError(f"{CHAT_SHAPE}; got roles {roles}")
        for turn in self.messages[-2:]:
            if not turn.content.strip() or len(turn.content) > MAX_TEXT:
                raise ValueError(f"the {turn.role} turn must hold some text, at most {MAX_TEXT} characters")
        return self

    def to_edit(self) -> EditCreate:
        question, answer = self.messages[-2].content, self.messages[-1].content
        fields = self.model_dump(exclude={"messages"})
        return EditCreate(prompt=question, target_new=answer, asked_as="chat", **fields)


def _one_kind(value: Any) -> str:
    return "chat" if isinstance(value, dict) and "messages" in value else "single"


EditItem = Annotated[
    Annotated[EditCreate, Tag("single")] | Annotated[EditChatCreate, Tag("chat")],
    Discriminator(_one_kind),
]


class EditBatchCreate(Strict):
    """Several facts applied as one version (one delta from all records)."""

    edits: list[EditItem] = Field(min_length=1, max_length=MAX_BATCH)

    def as_edits(self) -> list[EditCreate]:
        return [e.to_edit() if isinstance(e, EditChatCreate) else e for e in self.edits]


def _edit_kind(value: Any) -> str:
    return "batch" if isinstance(value, dict) and "edits" in value else _one_kind(value)


EditRequest = Annotated[
    Annotated[EditCreate, Tag("single")] | Annotated[EditChatCreate, Tag("chat")] | Annotated[EditBatchCreate, Tag("batch")],
    Discriminator(_edit_kind),
]


class EditAccepted(BaseModel):
    id: str
    status: EditStatus


class Durations(BaseModel):
    queued_seconds: float | None = Field(None, description="queued -> started")
    apply_seconds: float | None = Field(None, description="started -> visible to generations")
    total_seconds: float | None = Field(None, description="queued -> visible")


class EditPublic(BaseModel):
    id: str
    status: EditStatus
    version: int | None = Field(None, description="the model version this edit produced")
    rollback_version: int | None = Field(None, description="the version that removed it")
    delta_sha256: str | None = Field(None, description="content hash of its delta in the store (deltas/<sha256>.safetensors)")
    cancelled: bool = Field(False, description="rolled back before it was ever applied")
    n_records: int
    records: list[EditCreate]
    queued_at: datetime
    started_at: datetime | None
    applied_at: datetime | None
    finished_at: datetime | None
    rolled_back_at: datetime | None
    durations: Durations
    error: str | None
    took: bool | None = Field(
        None,
        description="after applying (and refitting, if it needed one), its prompt generates the "
        "target, asked plainly and in the chat template; null until checked",
    )
    refit: str | None = Field(
        None, description="null: none needed; `pending` (checking or refitting in the background), `done`, or `failed: <reason>`"
    )
    author: str | None = Field(None, description="name of the API key that made the edit (`anonymous` without keys)")
    rolled_back_by: str | None = Field(None, description="name of the API key that asked for its rollback")

    @classmethod
    def from_row(cls, row: EditRow) -> "EditPublic":
        def span(a: float | None, b: float | None) -> float | None:
            return round(b - a, 6) if a is not None and b is not None else None

        return cls(
            id=row.id,
            status=row.status,
            version=row.version,
            rollback_version=row.rollback_version,
            delta_sha256=row.delta_sha256,
            cancelled=row.status == EditStatus.rolled_back and row.version is None,
            n_records=len(row.records),
            records=[EditCreate.model_validate(r) for r in row.records],
            queued_at=_time(row.queued_at),
            started_at=_time(row.started_at),
            applied_at=_time(row.applied_at),
            finished_at=_time(row.finished_at),
            rolled_back_at=_time(row.rolled_back_at),
            durations=Durations(
                queued_seconds=span(row.queued_at, row.started_at),
                apply_seconds=span(row.started_at, row.applied_at),
                total_seconds=span(row.queued_at, row.applied_at),
            ),
            error=row.error if row.took != 0 else (row.error or "applied, but its prompt does not generate the target"),
            took=None if row.took is None else bool(row.took),
            refit=row.refit,
            author=row.author,
            rolled_back_by=row.rolled_back_by,
        )


def _time(t: float | None) -> datetime | None:
    return datetime.fromtimestamp(t, tz=timezone.utc) if t is not None else None


class EditPage(BaseModel):
    items: list[EditPublic]
    next_cursor: str | None = Field(None, description="pass as `cursor` for the next page; null on the last")


class Score(BaseModel):
    before: float | None = Field(description="% on the version before the edit; null when n = 0")
    after: float | None = Field(description="% on the version the edit produced; null when n = 0")
    n: int


class EditMetrics(BaseModel):
    """By generation (greedy, exact match of the cut answer; service/evaluation.py) and teacher-forced."""

    reliability_plain: Score | None = Field(None, description="by generation: the edit prompt, asked plainly, answers the target")
    reliability_chat: Score | None = Field(None, description="by generation: the edit prompt as a user turn in the chat template")
    generalization_plain: Score | None = Field(None, description="by generation: each rephrase prompt, asked plainly")
    generalization_chat: Score | None = Field(None, description="by generation: each rephrase prompt in the chat template")
    probe_locality_generation: Score | None = Field(None, description="by generation: probes whose greedy answer did not change")
    subject_locality_generation: Score | None = Field(
        None, description="by generation, chat template: other questions about each edit's subject whose answer did not change"
    )
    subject_hijack: Score | None = Field(
        None, description="by generation, chat template: other questions about each edit's subject answered with the edit's target"
    )
    subject_mentions: Score | None = Field(
        None,
        description="by generation, chat template: other questions about each edit's subject whose answer's first sentence "
        "names the edit's target",
    )
    reliability: Score = Field(description="teacher-forced token accuracy of the target after the edit prompt")
    generalization: Score = Field(description="teacher-forced, after each rephrase prompt")
    locality: Score = Field(description="teacher-forced argmax agreement on the request's locality pairs")
    portability: Score = Field(description="teacher-forced, on the request's portability pairs")
    probe_locality: Score = Field(description="teacher-forced argmax agreement on the fixed probes")


class MetricsPublic(BaseModel):
    id: str
    ready: bool
    status: EditStatus
    version: int | None = None
    detail: str | None = None
    metrics: EditMetrics | None = None


class GenerateRequest(Strict):
    prompt: Text
    max_new_tokens: Int = Field(
        DEFAULT_NEW_TOKENS, ge=1, description=f"at most the max_new_tokens setting; unset: {DEFAULT_NEW_TOKENS} or that cap if lower"
    )
    temperature: Float = Field(0.0, ge=0.0, le=5.0, description="0 (or below 1e-4) = greedy")
    top_p: Float = Field(1.0, gt=0.0, le=1.0)
    # 2**53 - 1: the largest integer every JSON parser reads exactly (2**63 - 1 became 2**63 as a double).
    seed: Annotated[int, Field(ge=0, le=2**53 - 1), BeforeValidator(_json_number)] | None = Field(
        None, description="for reproducible sampling; 0 to 2**53 - 1"
    )
    stream: Bool = Field(False, description="server-sent events: `token` events, then one `done` event")
    version: Annotated[int, Field(ge=0), BeforeValidator(_json_number)] | None = Field(
        None, description="any version in the store (0: the base); default the newest; 404 if unknown"
    )


class GeneratePublic(BaseModel):
    text: str
    model_version: int
    tokens: int
    finish_reason: Literal["length", "eos", "stop"]


class EditorPublic(BaseModel):
    tag: str
    path: str | None
    trained: bool
    instruct: bool


class ModelPublic(BaseModel):
    model: str
    editor: EditorPublic
    version: int
    state_sha256: str = Field(description="sha256 of the edited weights now served (editor_core.delta.state_sha256)")
    active_edits: list[str] = Field(description="edit ids in force, in commit order")
    device: str
    dtype: str
    memory: str = Field("routed", description="how edits are held: `routed` (each question meets at most one edit) or `summed`")
    health: dict | None = Field(
        None,
        description="the edited model's health: active edits, largest ‖ΔW‖/‖W‖ a question can meet, "
        "background work pending, and the capability set's score against the unedited model",
    )


class VersionPublic(BaseModel):
    version: int
    cause: str = Field(description="what made it: `base`, `edit:<id>`, `rollback:<id>` or `refit:<id>` (the edit's refitted delta)")
    state_sha256: str = Field(description="sha256 of the edited weights of this version")
    created_at: datetime
    active_count: int = Field(description="edits in force in this version")

    @classmethod
    def from_row(cls, row: VersionRow) -> "VersionPublic":
        return cls(
            version=row.version,
            cause=row.cause,
            state_sha256=row.state_sha256,
            created_at=_time(row.created_at),
            active_count=len(row.active),
        )


class VersionPage(BaseModel):
    items: list[VersionPublic]
    next_cursor: int | None = Field(None, description="pass as `before` for the next page; null on the last")


class Health(BaseModel):
    status: Literal["ok"]
    checks: dict[str, bool] = Field(default_factory=dict)

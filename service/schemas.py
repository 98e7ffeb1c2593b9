"""Request and response shapes. `*Create` is what a client sends, `*Public`
what it gets back, so store columns never leak into responses by accident."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, StringConstraints, Tag

from editor_core import instructions
from editor_core.records import EditRecord, Probe

from .store import EditRow, EditStatus

DEFAULT_TASK = "counterfact"
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


class EditCreate(Strict):
    """One fact to edit: `prompt` should be answered with `target_new`."""

    prompt: Text
    target_new: Text
    subject: Annotated[str, StringConstraints(max_length=MAX_TEXT)] | None = None
    task: ShortText | None = Field(
        None, description=f"instruction task; default {DEFAULT_TASK!r}", json_schema_extra={"enum": [*instructions.tasks(), None]}
    )
    instruction: Annotated[str, StringConstraints(max_length=MAX_TEXT, pattern=r"^[^\r\n]*$")] | None = Field(
        None, description="one line describing the edit, for instructed editors (EditRecord.extra['instruction']); blank: the task's own"
    )
    rephrase_prompts: list[Text] = Field(default_factory=list, max_length=MAX_PAIRS)
    locality: list[PairIn] = Field(default_factory=list, max_length=MAX_PAIRS)
    portability: list[PairIn] = Field(default_factory=list, max_length=MAX_PAIRS)

    def to_record(self, source: str) -> EditRecord:
        return EditRecord(
            task=self.task or DEFAULT_TASK,
            prompt=self.prompt,
            target_new=self.target_new,
            subject=self.subject or "",
            rephrase_prompts=tuple(self.rephrase_prompts),
            locality=tuple(Probe(p.prompt, p.answer) for p in self.locality),
            portability=tuple(Probe(p.prompt, p.answer) for p in self.portability),
            source=source,
            extra={"instruction": self.instruction} if self.instruction and self.instruction.strip() else {},
        )


class EditBatchCreate(Strict):
    """Several facts applied as one version (one delta from all records)."""

    edits: list[EditCreate] = Field(min_length=1, max_length=MAX_BATCH)


def _edit_kind(value: Any) -> str:
    return "batch" if isinstance(value, dict) and "edits" in value else "single"


EditRequest = Annotated[
    Annotated[EditCreate, Tag("single")] | Annotated[EditBatchCreate, Tag("batch")],
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
            error=row.error,
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
    reliability: Score
    generalization: Score
    locality: Score
    portability: Score
    probe_locality: Score


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
    seed: Annotated[int, Field(ge=0, le=2**53 - 1), BeforeValidator(_json_number)] | None = Field(None, description="for reproducible sampling; 0 to 2**53 - 1")
    stream: Bool = Field(False, description="server-sent events: `token` events, then one `done` event")
    version: Annotated[int, Field(ge=0), BeforeValidator(_json_number)] | None = Field(None, description="409 unless this is the current version")


class GeneratePublic(BaseModel):
    text: str
    model_version: int
    tokens: int
    finish_reason: Literal["length", "eos"]


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


class Health(BaseModel):
    status: Literal["ok"]
    checks: dict[str, bool] = Field(default_factory=dict)

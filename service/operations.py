"""What each route does, so that routes stay a few lines (the template's crud.py).

Functions take the `Runtime` and keyword arguments and return schemas, or raise
`errors.Problem`. The rule for every request that changes state: write it to
the store first (so an acknowledged request survives anything), then enqueue
its job; if the queue is down, the 202 still stands and the worker enqueues
the job from the store once the queue is back.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import uuid

from .admission import check_edits
from .errors import Problem, not_found
from .generation import Ask, Sampling, answer_async, encode_prompt, max_positions
from .queue import Job, QueueUnavailable
from .records import EditStatus
from .runtime import Runtime
from .schemas import (
    EditBatchCreate,
    EditChatCreate,
    EditCreate,
    EditMetrics,
    EditorPublic,
    EditPage,
    EditPublic,
    GeneratePublic,
    GenerateRequest,
    MetricsPublic,
    ModelPublic,
    VersionPage,
    VersionPublic,
)
from .store import EditRow
from .versions import VersionNotFound

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- edits


async def submit_edit(
    rt: Runtime, *, body: EditCreate | EditChatCreate | EditBatchCreate, idempotency_key: str | None, author: str
) -> EditRow:
    """Store the edit (or find the one this Idempotency-Key already made), then
    enqueue it. An edit stated as chat is stored as its question and answer."""
    records = body.as_edits() if isinstance(body, EditBatchCreate) else [body.to_edit() if isinstance(body, EditChatCreate) else body]
    instructed = bool(getattr(getattr(rt.components.editor, "config", None), "instruct", False))
    await asyncio.to_thread(
        check_edits, records, model=rt.components.model, tokenizer=rt.components.tokenizer,
        tokenizer_lock=rt.tokenizer_lock, instructed=instructed,
    )  # fmt: skip
    dumped = [r.model_dump(mode="json") for r in records]
    request_sha = hashlib.sha256(json.dumps(dumped, sort_keys=True).encode()).hexdigest()
    row, created = await asyncio.to_thread(
        rt.store.create_edit,
        edit_id=uuid.uuid4().hex,
        records=dumped,
        request_sha256=request_sha,
        idempotency_key=idempotency_key,
        author=author,
    )
    if not created:
        if row.request_sha256 != request_sha:
            # 409, not the 422 of the IETF idempotency-key draft: the request is well formed,
            # it conflicts with what the key is already bound to (and a 422 reads as "fix your JSON").
            raise Problem(
                409, "idempotency-key-reused", f"Idempotency-Key {idempotency_key!r} was used for another request (edit {row.id})"
            )
        return row
    rt.telemetry.edits.labels("queued").inc()
    await _enqueue(rt, Job(row.id))
    return row


async def _enqueue(rt: Runtime, job: Job) -> None:
    try:
        await rt.queue.enqueue(job)
    except QueueUnavailable as e:
        log.warning("job %s stored but not enqueued (%s); the worker will enqueue it", job.id, e)
        rt.telemetry.enqueue_deferred.inc()
        rt.worker.request_reconcile()


def get_edit(rt: Runtime, edit_id: str) -> EditRow:
    row = rt.store.edit(edit_id)
    if row is None:
        raise not_found("edit", edit_id)
    return row


async def roll_back(rt: Runtime, *, edit_id: str, author: str) -> EditRow:
    """Ask the worker to roll the edit back (cancel it if it has not run yet)."""
    row = get_edit(rt, edit_id)
    if row.status == EditStatus.failed:
        raise Problem(409, "edit-failed", f"edit {edit_id} failed and was never applied; there is nothing to roll back")
    job = await asyncio.to_thread(rt.store.request_rollback, edit_id, author=author)
    if job is not None:
        await _enqueue(rt, Job(job.id))
    return get_edit(rt, edit_id)


def list_edits(rt: Runtime, *, status: EditStatus | None, limit: int, cursor: str | None) -> EditPage:
    rows = rt.store.list_edits(status=status, limit=limit + 1, before_seq=_decode_cursor(cursor))
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = _encode_cursor(rows[-1].seq) if more else None
    return EditPage(items=[EditPublic.from_row(r) for r in rows], next_cursor=next_cursor)


def _encode_cursor(seq: int) -> str:
    return f"s{seq}"


def _decode_cursor(cursor: str | None) -> int | None:
    """The schema's pattern (CURSOR_PATTERN) admits only what this reads: `s<seq>`,
    or empty for the first page, so every cursor the schema allows means something."""
    return int(cursor[1:]) if cursor else None


def edit_metrics(rt: Runtime, *, edit_id: str) -> tuple[int, MetricsPublic]:
    """(200, scores) once the worker has them; (202, not ready) until then."""
    row = get_edit(rt, edit_id)
    out = MetricsPublic(id=row.id, ready=False, status=row.status, version=row.version)
    if row.metrics is not None:
        return 200, out.model_copy(update={"ready": True, "metrics": EditMetrics.model_validate(row.metrics)})
    if row.metrics_error is not None:
        return 200, out.model_copy(update={"ready": True, "detail": f"metrics could not be computed: {row.metrics_error}"})
    if row.version is None and row.status in (EditStatus.failed, EditStatus.rolled_back):
        raise Problem(409, "never-applied", f"edit {edit_id} is {row.status} and was never applied; it has no metrics")
    detail = "the edit is not applied yet" if row.version is None else "the worker computes them right after applying the edit"
    return 202, out.model_copy(update={"detail": detail})


# --------------------------------------------------------------------------- model and generation


async def model_info(rt: Runtime) -> ModelPublic:
    snap = rt.state.current()
    health = await asyncio.to_thread(rt.health.peek, snap)
    c = rt.components
    editor = EditorPublic(
        tag=getattr(c.editor, "tag", type(c.editor).__name__),
        path=c.editor_path,
        trained=c.trained,
        instruct=bool(getattr(getattr(c.editor, "config", None), "instruct", False)),
    )
    first = next(iter(rt.state.base.values()))
    return ModelPublic(
        model=getattr(c.model, "name_or_path", "") or rt.settings.model,
        editor=editor,
        version=snap.version,
        state_sha256=snap.state_sha256,
        active_edits=list(snap.active),
        device=str(first.device),
        dtype=str(first.dtype).removeprefix("torch."),
        memory=rt.state.memory,
        health={**{k: v for k, v in health.items() if k != "state_sha256"}, "background_pending": rt.worker.background_pending},
    )


def list_versions(rt: Runtime, *, limit: int, before: int | None) -> VersionPage:
    rows = rt.store.list_versions(limit=limit + 1, before=before)
    more = len(rows) > limit
    rows = rows[:limit]
    return VersionPage(items=[VersionPublic.from_row(v) for v in rows], next_cursor=rows[-1].version if more else None)


async def snapshot_at(rt: Runtime, version: int | None):
    """The snapshot of a stored version (None: the newest), rebuilt off the event
    loop when it is not cached (`versions.Versions`); 404 if the store lacks it."""
    try:
        return await asyncio.to_thread(rt.versions.get, version)
    except VersionNotFound as e:
        raise Problem(404, "version-not-found", str(e), title="Version not found", newest_version=e.newest) from None


def check_max_tokens(rt: Runtime, asked: int, name: str = "max_new_tokens") -> None:
    cap = rt.settings.max_new_tokens
    if asked > cap:
        raise Problem(422, name.replace("_", "-"), f"{name} {asked} is above this service's cap of {cap}", param=name)


def encode(rt: Runtime, snap, text: str, max_new_tokens: int, *, special: bool = True) -> list[int]:
    with rt.tokenizer_lock:
        ids = encode_prompt(
            rt.components.tokenizer, text, max_positions=max_positions(snap.model), max_new_tokens=max_new_tokens, special=special
        )
    if not ids:
        raise Problem(422, "empty-prompt", "the prompt encodes to no tokens")
    return ids


async def prepare_generation(rt: Runtime, req: GenerateRequest) -> Ask:
    """The request resolved against the settings and the store: the version
    (any stored one; the newest by default) is read once and used throughout."""
    if "max_new_tokens" not in req.model_fields_set:  # the default stays under the cap
        req = req.model_copy(update={"max_new_tokens": min(req.max_new_tokens, rt.settings.max_new_tokens)})
    check_max_tokens(rt, req.max_new_tokens)
    snap = await snapshot_at(rt, req.version)
    ids = encode(rt, snap, req.prompt, req.max_new_tokens)
    return Ask(snap, req.prompt, ids, Sampling(req.max_new_tokens, req.temperature, req.top_p, req.seed))


async def run(rt: Runtime, ask: Ask):
    """Generate on `ask` once a slot is free, timing it."""
    return await answer_async(ask, rt.components.tokenizer, slots=rt.generation_slots, on_done=rt.telemetry.generation_latency.observe)


async def generate_text(rt: Runtime, req: GenerateRequest) -> GeneratePublic:
    ask = await prepare_generation(rt, req)
    out = await run(rt, ask)
    return GeneratePublic(text=out.text, model_version=ask.snapshot.version, tokens=out.tokens, finish_reason=out.finish_reason)


# --------------------------------------------------------------------------- health


async def readiness(rt: Runtime) -> dict[str, bool]:
    checks = {"model": True, "worker": rt.worker.alive}
    try:
        checks["store"] = await asyncio.to_thread(rt.store.ping)
    except Exception:
        checks["store"] = False
    checks["queue"] = await rt.queue.ping()
    return checks


async def render_metrics(rt: Runtime) -> bytes:
    try:
        rt.telemetry.queue_depth.set(await rt.queue.depth())
    except QueueUnavailable:
        pass  # the gauge keeps its last value; /readyz reports the queue
    return rt.telemetry.render()

"""Edits: submit, inspect, list, roll back, and their metrics."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Query, Response

from .. import operations as ops
from ..auth import AUTH_RESPONSES, EditCaller, RequireAsk
from ..deps import IdempotencyKey, RuntimeDep
from ..errors import responses
from ..records import EditStatus
from ..schemas import CURSOR_PATTERN, EditAccepted, EditPage, EditPublic, EditRequest, MetricsPublic

# Reading needs `ask`; adding and rolling back need `edit` (the caller is recorded).
router = APIRouter(prefix="/edits", tags=["edits"], dependencies=[RequireAsk], responses=AUTH_RESPONSES)


@router.post("", status_code=202, response_model=EditAccepted, responses=responses(409, 422, 503))
async def create_edit(
    rt: RuntimeDep, caller: EditCaller, response: Response, body: Annotated[EditRequest, Body()], idempotency_key: IdempotencyKey = None
):
    """Queue one edit, or a batch (`{"edits": [...]}`) applied as one version."""
    row = await ops.submit_edit(rt, body=body, idempotency_key=idempotency_key, author=caller.name)
    response.headers["Location"] = f"/edits/{row.id}"
    return EditAccepted(id=row.id, status=row.status)


@router.get("", response_model=EditPage, responses=responses(422))
def list_edits(
    rt: RuntimeDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(pattern=CURSOR_PATTERN, description="next_cursor of the previous page; empty: the first")] = None,
    status: EditStatus | None = None,
):
    """Newest first."""
    return ops.list_edits(rt, status=status, limit=limit, cursor=cursor)


@router.get("/{edit_id}", response_model=EditPublic, responses=responses(404))
def get_edit(rt: RuntimeDep, edit_id: str):
    return EditPublic.from_row(ops.get_edit(rt, edit_id))


@router.delete("/{edit_id}", status_code=202, response_model=EditAccepted, responses=responses(404, 409, 503))
async def roll_back(rt: RuntimeDep, caller: EditCaller, response: Response, edit_id: str):
    """Roll the edit back (the others stay in force); a queued edit is cancelled."""
    row = await ops.roll_back(rt, edit_id=edit_id, author=caller.name)
    response.headers["Location"] = f"/edits/{row.id}"
    return EditAccepted(id=row.id, status=row.status)


@router.get("/{edit_id}/metrics", response_model=MetricsPublic, responses={202: {"model": MetricsPublic}, **responses(404, 409)})
def edit_metrics(rt: RuntimeDep, response: Response, edit_id: str):
    """Scores before/after the edit; 202 with `ready: false` until the worker has them."""
    response.status_code, body = ops.edit_metrics(rt, edit_id=edit_id)
    if not body.ready:
        response.headers["Retry-After"] = "1"
    return body

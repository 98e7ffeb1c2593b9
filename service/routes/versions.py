"""The versions the store holds, newest first: a read-only timeline."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from .. import operations as ops
from ..auth import AUTH_RESPONSES, RequireAsk
from ..deps import RuntimeDep
from ..errors import responses
from ..schemas import VersionPage

router = APIRouter(tags=["model"], dependencies=[RequireAsk], responses=AUTH_RESPONSES)


@router.get("/versions", response_model=VersionPage, responses=responses(422))
def list_versions(
    rt: RuntimeDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    before: Annotated[int | None, Query(ge=0, description="next_cursor of the previous page")] = None,
):
    """Each version with its cause, weights hash and number of edits in force."""
    return ops.list_versions(rt, limit=limit, before=before)

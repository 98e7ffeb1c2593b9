"""The model being served: version, weights hash, active edits."""

from __future__ import annotations

from fastapi import APIRouter

from .. import operations as ops
from ..auth import AUTH_RESPONSES, RequireAsk
from ..deps import RuntimeDep
from ..schemas import ModelPublic

router = APIRouter(tags=["model"], dependencies=[RequireAsk], responses=AUTH_RESPONSES)


@router.get("/model", response_model=ModelPublic)
async def get_model(rt: RuntimeDep):
    return await ops.model_info(rt)

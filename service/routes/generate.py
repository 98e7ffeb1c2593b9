"""Generation on the version being served, whole or as server-sent events."""

from __future__ import annotations

from fastapi import APIRouter
from sse_starlette import EventSourceResponse

from .. import operations as ops
from ..auth import AUTH_RESPONSES, RequireAsk
from ..deps import RuntimeDep
from ..errors import responses
from ..generation import stream_events
from ..schemas import GeneratePublic, GenerateRequest

router = APIRouter(tags=["generate"], dependencies=[RequireAsk], responses=AUTH_RESPONSES)


@router.post(
    "/generate",
    response_model=GeneratePublic,
    responses={200: {"content": {"text/event-stream": {}}}, **responses(409, 422)},
)
async def generate(rt: RuntimeDep, req: GenerateRequest):
    """One generation runs wholly on one version, named in the answer."""
    if not req.stream:
        return await ops.generate_text(rt, req)
    snap, ids, sampling = ops.prepare_generation(rt, req)
    events = stream_events(
        snap, rt.components.tokenizer, ids, sampling, slots=rt.generation_slots, on_done=rt.telemetry.generation_latency.observe
    )
    return EventSourceResponse(events, headers={"X-Model-Version": str(snap.version)})

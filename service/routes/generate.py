"""Generation on the version being served, whole or as server-sent events."""

from __future__ import annotations

from fastapi import APIRouter, Response
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
    responses={200: {"content": {"text/event-stream": {}}}, **responses(404, 422)},
)
async def generate(rt: RuntimeDep, req: GenerateRequest, response: Response):
    """One generation runs wholly on one version (the newest, or `version`: any
    one still in the store), named in the answer and in `X-Model-Version`."""
    if not req.stream:
        out = await ops.generate_text(rt, req)
        response.headers["X-Model-Version"] = str(out.model_version)
        return out
    ask = await ops.prepare_generation(rt, req)
    events = stream_events(ask, rt.components.tokenizer, slots=rt.generation_slots, on_done=rt.telemetry.generation_latency.observe)
    return EventSourceResponse(events, headers={"X-Model-Version": str(ask.snapshot.version)})

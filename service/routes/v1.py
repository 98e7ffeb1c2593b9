"""OpenAI-compatible routes: `/v1/models`, `/v1/completions`, `/v1/chat/completions`.

Errors here take OpenAI's shape (errors.py). Every answer names the version it
ran on: `model` is `<name>@v<K>`, and the `X-Model-Version` header is K.
"""

from __future__ import annotations

from http import HTTPStatus

from fastapi import APIRouter, Response
from fastapi.responses import StreamingResponse

from .. import openai_api as oai
from ..auth import RequireAsk
from ..deps import RuntimeDep
from ..openai_schemas import ChatCompletion, ChatCompletionRequest, Completion, CompletionRequest, ModelCard, ModelList, OpenAIError

# On /v1 every error, the key's included, has OpenAI's shape (errors.problem_response switches on the path).
V1_AUTH_RESPONSES = {s: {"model": OpenAIError, "description": HTTPStatus(s).phrase} for s in (401, 403, 429)}
router = APIRouter(prefix="/v1", tags=["openai"], dependencies=[RequireAsk], responses=V1_AUTH_RESPONSES)
ERRORS = {s: {"model": OpenAIError} for s in (400, 404)}
STREAM = {200: {"content": {"text/event-stream": {}}}}


def _streamed(rt, plan: oai.Plan, *, chat: bool, include_usage: bool) -> StreamingResponse:
    body = oai.stream(rt, plan, chat=chat, include_usage=include_usage)
    headers = {"X-Model-Version": str(plan.snapshot.version), "Cache-Control": "no-cache"}
    return StreamingResponse(body, media_type="text/event-stream", headers=headers)


@router.get("/models", response_model=ModelList)
def list_models(rt: RuntimeDep):
    """The served name (the newest version) and `<name>@v<K>` for every version in the store."""
    return oai.list_models(rt)


@router.get("/models/{model:path}", response_model=ModelCard, responses=ERRORS)
def get_model(rt: RuntimeDep, model: str, response: Response):
    card = oai.get_model(rt, model)
    response.headers["X-Model-Version"] = str(card.version)
    return card


@router.post("/chat/completions", response_model=ChatCompletion, responses={**STREAM, **ERRORS})
async def chat_completions(rt: RuntimeDep, req: ChatCompletionRequest, response: Response):
    """The messages through the tokenizer's chat template, answered by the version `model` names."""
    plan = await oai.plan_chat(rt, req)
    if req.stream:
        return _streamed(rt, plan, chat=True, include_usage=bool(req.stream_options and req.stream_options.include_usage))
    response.headers["X-Model-Version"] = str(plan.snapshot.version)
    return await oai.chat_completion(rt, plan)


@router.post("/completions", response_model=Completion, responses={**STREAM, **ERRORS})
async def completions(rt: RuntimeDep, req: CompletionRequest, response: Response):
    """Plain continuation of `prompt` (a string or a list of them)."""
    plan = await oai.plan_completion(rt, req)
    if req.stream:
        return _streamed(rt, plan, chat=False, include_usage=bool(req.stream_options and req.stream_options.include_usage))
    response.headers["X-Model-Version"] = str(plan.snapshot.version)
    return await oai.completion(rt, plan)

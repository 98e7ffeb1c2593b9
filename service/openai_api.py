"""What the OpenAI-compatible routes do: the model name to a version, the
messages through the chat template, each choice through `generation.answer`,
and the answers in OpenAI's shapes (whole, or as `data:` chunks ending with
`data: [DONE]`).

The routing key of a request (what `Ask.query` carries) is the user's question:
the last user message of a chat, the prompt of a completion.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import AsyncIterator

from . import chat as chat_template
from . import operations as ops
from .errors import TYPE_BASE, Problem, openai_error
from .generation import Ask, Generated, Sampling, stream_text
from .openai_schemas import (
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatDelta,
    Completion,
    CompletionChoice,
    CompletionRequest,
    ModelCard,
    ModelList,
    Usage,
)
from .runtime import Runtime
from .state import Snapshot

DONE = "data: [DONE]\n\n"


# --------------------------------------------------------------------------- names and versions


def served_name(rt: Runtime) -> str:
    return getattr(rt.components.model, "name_or_path", "") or rt.settings.model


def model_id(rt: Runtime, version: int) -> str:
    return f"{served_name(rt)}@v{version}"


def parse_model(rt: Runtime, model: str) -> int | None:
    """`<name>` -> None (the newest), `<name>@v<K>` -> K; anything else is a 404."""
    name = served_name(rt)
    if model == name:
        return None
    base, sep, tail = model.rpartition("@v")
    if sep and base == name and tail.isdigit():
        return int(tail)
    raise Problem(
        404,
        "model-not-found",
        f"the model {model!r} does not exist; ask for {name!r} (the newest version) or "
        f"'{name}@v<K>' (version K; GET /v1/models lists them)",
        param="model",
    )


async def snapshot_for(rt: Runtime, model: str) -> Snapshot:
    version = parse_model(rt, model)
    try:
        return await ops.snapshot_at(rt, version)
    except Problem as e:
        raise Problem(404, "model-not-found", f"the model {model!r} does not exist: {e.detail}", param="model") from None


def list_models(rt: Runtime) -> ModelList:
    rows = rt.versions.listing()
    newest = rows[-1]

    def card(ident: str, row) -> ModelCard:
        return ModelCard(
            id=ident, created=int(row.created_at), version=row.version, active_edits=len(row.active), state_sha256=row.state_sha256
        )

    return ModelList(data=[card(served_name(rt), newest), *(card(model_id(rt, r.version), r) for r in rows)])


def get_model(rt: Runtime, model: str) -> ModelCard:
    version = parse_model(rt, model)
    cards = list_models(rt).data
    found = cards[0] if version is None else next((c for c in cards[1:] if c.version == version), None)
    if found is None:
        raise Problem(404, "model-not-found", f"the model {model!r} does not exist (GET /v1/models lists them)", param="model")
    return found


# --------------------------------------------------------------------------- requests into Asks


@dataclass(frozen=True)
class Plan:
    """A request resolved: the version, one Ask per choice, how many prompt tokens."""

    snapshot: Snapshot
    model: str  # name@vK
    asks: list[Ask]
    prompt_tokens: int
    prefixes: list[str]  # completions with echo: the prompt before each choice's text


def _sampling(req, max_tokens: int, i: int) -> Sampling:
    greedy = req.temperature == 0 or req.top_p == 0
    seed = None if req.seed is None else (req.seed + i) % 2**63
    return Sampling(max_tokens, 0.0 if greedy else req.temperature, 1.0 if greedy else req.top_p, seed)


def _max_tokens(rt: Runtime, asked: int | None, name: str) -> int:
    if asked is None:
        return rt.settings.max_new_tokens
    ops.check_max_tokens(rt, asked, name)
    return asked


async def plan_chat(rt: Runtime, req: ChatCompletionRequest) -> Plan:
    name = "max_completion_tokens" if req.max_completion_tokens is not None else "max_tokens"
    max_tokens = _max_tokens(rt, req.max_completion_tokens or req.max_tokens, name)
    snap = await snapshot_for(rt, req.model)
    messages = [{"role": m.template_role, "content": m.text} for m in req.messages]
    try:
        with rt.tokenizer_lock:
            text = chat_template.render(rt.components.tokenizer, messages)
    except chat_template.TemplateFailed as e:
        raise Problem(400, "chat-template", str(e), param="messages") from None
    ids = ops.encode(rt, snap, text, max_tokens, special=False)
    asks = [Ask(snap, req.question, ids, _sampling(req, max_tokens, i), req.stops) for i in range(req.n)]
    return Plan(snap, model_id(rt, snap.version), asks, len(ids), [""] * req.n)


async def plan_completion(rt: Runtime, req: CompletionRequest) -> Plan:
    max_tokens = _max_tokens(rt, req.max_tokens, "max_tokens")
    snap = await snapshot_for(rt, req.model)
    asks, prefixes, prompt_tokens = [], [], 0
    for prompt in req.prompts:
        ids = ops.encode(rt, snap, prompt, max_tokens)
        prompt_tokens += len(ids)
        for i in range(req.n):
            asks.append(Ask(snap, prompt, ids, _sampling(req, max_tokens, i), req.stops))
            prefixes.append(prompt if req.echo else "")
    return Plan(snap, model_id(rt, snap.version), asks, prompt_tokens, prefixes)


# --------------------------------------------------------------------------- answers


def _finish(out: Generated) -> str:
    return "length" if out.finish_reason == "length" else "stop"


def _head(kind: str, plan: Plan) -> dict:
    return {
        "id": f"{kind}-{uuid.uuid4().hex}",
        "created": int(time.time()),
        "model": plan.model,
        "system_fingerprint": plan.snapshot.state_sha256[:16],
    }


def _usage(plan: Plan, outs: list[Generated]) -> Usage:
    done = sum(o.tokens for o in outs)
    return Usage(prompt_tokens=plan.prompt_tokens, completion_tokens=done, total_tokens=plan.prompt_tokens + done)


async def chat_completion(rt: Runtime, plan: Plan) -> ChatCompletion:
    outs = [await ops.run(rt, ask) for ask in plan.asks]
    choices = [ChatChoice(index=i, message=AssistantMessage(content=o.text), finish_reason=_finish(o)) for i, o in enumerate(outs)]
    return ChatCompletion(**_head("chatcmpl", plan), choices=choices, usage=_usage(plan, outs))


async def completion(rt: Runtime, plan: Plan) -> Completion:
    outs = [await ops.run(rt, ask) for ask in plan.asks]
    choices = [CompletionChoice(index=i, text=plan.prefixes[i] + o.text, finish_reason=_finish(o)) for i, o in enumerate(outs)]
    return Completion(**_head("cmpl", plan), choices=choices, usage=_usage(plan, outs))


def _data(model) -> str:
    body = model if isinstance(model, dict) else model.model_dump(mode="json")
    for choice in body.get("choices", []):
        if "delta" in choice:  # OpenAI leaves out what a delta does not carry (the last one is {})
            choice["delta"] = {k: v for k, v in choice["delta"].items() if v is not None}
    return f"data: {json.dumps(body)}\n\n"


async def stream(rt: Runtime, plan: Plan, *, chat: bool, include_usage: bool) -> AsyncIterator[str]:
    """OpenAI's stream: chunks for each choice in turn, each choice's last chunk
    carrying its finish_reason, a usage chunk if asked, then `data: [DONE]`."""
    head = _head("chatcmpl" if chat else "cmpl", plan)

    def chunk(index: int, text: str | None, finish: str | None, *, role: bool = False) -> str:
        if chat:
            delta = ChatDelta(role="assistant" if role else None, content=text)
            return _data(ChatCompletionChunk(**head, choices=[ChatChunkChoice(index=index, delta=delta, finish_reason=finish)]))
        return _data(Completion(**head, choices=[CompletionChoice(index=index, text=text or "", finish_reason=finish)]))

    outs: list[Generated] = []
    for i, ask in enumerate(plan.asks):
        if chat or plan.prefixes[i]:
            yield chunk(i, plan.prefixes[i], None, role=chat)
        async for kind, payload in stream_text(
            ask, rt.components.tokenizer, slots=rt.generation_slots, on_done=rt.telemetry.generation_latency.observe
        ):
            if kind == "token":
                yield chunk(i, payload, None)
            elif kind == "done":
                outs.append(payload)
                yield chunk(i, "" if not chat else None, _finish(payload))
            else:  # the stream has begun: the error goes in it (OpenAI's SDKs raise it)
                yield _data(openai_error(500, TYPE_BASE + "generation-failed", payload))
                yield DONE
                return
    if include_usage:
        usage = _usage(plan, outs)
        cls = ChatCompletionChunk if chat else Completion
        yield _data(cls(**head, choices=[], usage=usage))
    yield DONE

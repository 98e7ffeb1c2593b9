"""A typed Python client for a running instructedit service, on httpx: `Client`
(sync) and `AsyncClient` (async), with the same methods.

    from service.client import Client

    with Client("http://127.0.0.1:8000") as c:
        accepted = c.edit("The capital of Peru is", "Quito")
        edit = c.wait(accepted.id)                      # applied, version 1
        print(c.chat("What is the capital of Peru?", max_tokens=16).text)
        print(c.chat("What is the capital of Peru?", version=0).text)   # as before the edit
        c.rollback(accepted.id)

Errors are raised as `ServiceError` subclasses (`BadRequest`, `Unauthorized`,
`NotFound`, `Conflict`, `ServerError`) carrying the problem details the
service sent (`status`, `type`, `title`, `detail`, the whole `body`); `wait`
raises `WaitTimeout`. With `api_key` every request carries
`Authorization: Bearer <key>`. Responses are read leniently (unknown fields
are ignored), so a newer service does not break an older client.

This module imports neither torch nor the service: only httpx and pydantic.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Generic, Sequence, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict

DEFAULT_URL = "http://127.0.0.1:8000"
TERMINAL = ("applied", "failed", "rolled_back")

# --------------------------------------------------------------------------- responses


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Accepted(_Lenient):
    id: str
    status: str


class Edit(_Lenient):
    id: str
    status: str  # queued | running | applied | failed | rolled_back
    version: int | None = None
    rollback_version: int | None = None
    delta_sha256: str | None = None
    cancelled: bool = False
    n_records: int
    records: list[dict]
    queued_at: datetime
    started_at: datetime | None = None
    applied_at: datetime | None = None
    finished_at: datetime | None = None
    rolled_back_at: datetime | None = None
    durations: dict[str, float | None] = {}
    error: str | None = None
    took: bool | None = None  # its prompt generates the target once applied (and refit); None until checked
    refit: str | None = None  # None: none needed; "pending", "done" or "failed: <reason>"
    author: str | None = None
    rolled_back_by: str | None = None


class EditPage(_Lenient):
    items: list[Edit]
    next_cursor: str | None = None


class Score(_Lenient):
    before: float | None
    after: float | None
    n: int


class Metrics(_Lenient):
    id: str
    ready: bool
    status: str
    version: int | None = None
    detail: str | None = None
    # a score the server did not measure for this edit is null (one added after the edit's metrics were stored)
    metrics: dict[str, Score | None] | None = None


class Generation(_Lenient):
    text: str
    model_version: int
    tokens: int
    finish_reason: str


class Usage(_Lenient):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatAnswer(_Lenient):
    text: str
    model: str  # <name>@v<K>
    version: int
    finish_reason: str
    usage: Usage


class ModelInfo(_Lenient):
    model: str
    editor: dict
    version: int
    state_sha256: str
    active_edits: list[str]
    device: str | None = None
    dtype: str | None = None


class ModelVersion(_Lenient):
    id: str  # <name> (the newest) or <name>@v<K>
    version: int
    active_edits: int
    created: int
    state_sha256: str


# --------------------------------------------------------------------------- errors


class ServiceError(Exception):
    """The service answered with an error; `body` is what it sent (problem details, or OpenAI's shape on /v1)."""

    def __init__(self, status: int, title: str, detail: str, *, type: str | None = None, body: Any = None):
        super().__init__(f"{status} {title}: {detail}")
        self.status, self.title, self.detail, self.type, self.body = status, title, detail, type, body


class BadRequest(ServiceError):
    """400 or 422: the request itself is wrong; `body` says which field."""


class Unauthorized(ServiceError):
    """401 or 403: a missing or wrong API key."""


class NotFound(ServiceError):
    """404: no such edit, version or model."""


class Conflict(ServiceError):
    """409: not possible in the edit's state (say, rolling back a failed edit)."""


class ServerError(ServiceError):
    """5xx: the service failed, or is not ready (503)."""


class WaitTimeout(TimeoutError):
    def __init__(self, edit: Edit, timeout: float):
        super().__init__(f"edit {edit.id} still {edit.status} after {timeout:g}s")
        self.edit = edit


def _raise_for(r: httpx.Response) -> None:
    if r.is_success:
        return
    try:
        body = r.json()
    except ValueError:
        body = r.text
    title, detail, kind = r.reason_phrase or str(r.status_code), str(body), None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):  # OpenAI's shape (/v1)
        error = body["error"]
        detail, kind = error.get("message", detail), error.get("code") or error.get("type")
    elif isinstance(body, dict):  # problem details
        title, detail, kind = body.get("title", title), body.get("detail", detail), body.get("type")
    cls = {400: BadRequest, 401: Unauthorized, 403: Unauthorized, 404: NotFound, 409: Conflict, 422: BadRequest}.get(r.status_code)
    cls = cls or (ServerError if r.status_code >= 500 else ServiceError)
    raise cls(r.status_code, title, detail, type=kind, body=body)


# --------------------------------------------------------------------------- requests, shared by both clients

T = TypeVar("T")


@dataclass(frozen=True)
class _Call(Generic[T]):
    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    json: Any = None
    params: dict | None = None
    headers: dict = field(default_factory=dict)


def _model(cls: type[T]) -> Callable[[httpx.Response], T]:
    return lambda r: cls.model_validate(r.json())


def _edit_call(prompt, target_new, messages, idempotency_key, fields) -> _Call[Accepted]:
    if messages is not None:
        body: dict = {"messages": list(messages)}
    elif prompt is not None and target_new is not None:
        body = {"prompt": prompt, "target_new": target_new}
    else:
        raise ValueError("give prompt and target_new, or messages (the user's question, then the assistant's new answer)")
    body.update({k: v for k, v in fields.items() if v is not None})
    return _post_edit(body, idempotency_key)


def _post_edit(body: dict, idempotency_key: str | None) -> _Call[Accepted]:
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    return _Call("POST", "/edits", _model(Accepted), json=body, headers=headers)


def _list_call(status, limit, cursor) -> _Call[EditPage]:
    params = {k: v for k, v in {"status": status, "limit": limit, "cursor": cursor}.items() if v is not None}
    return _Call("GET", "/edits", _model(EditPage), params=params)


def _generate_call(prompt, max_new_tokens, temperature, top_p, seed, version) -> _Call[Generation]:
    body = {
        "prompt": prompt,
        "max_new_tokens": max_new_tokens,
        "temperature": temperature,
        "top_p": top_p,
        "seed": seed,
        "version": version,
    }
    return _Call("POST", "/generate", _model(Generation), json={k: v for k, v in body.items() if v is not None})


def _chat_call(name: str, messages, version, max_tokens, temperature, top_p, seed, stop) -> _Call[ChatAnswer]:
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    model = name if version is None else f"{name}@v{version}"
    body = {
        "model": model,
        "messages": list(messages),
        "max_tokens": max_tokens,
        "temperature": temperature,
        "top_p": top_p,
        "seed": seed,
        "stop": stop,
    }
    return _Call("POST", "/v1/chat/completions", _chat_answer, json={k: v for k, v in body.items() if v is not None})


def _chat_answer(r: httpx.Response) -> ChatAnswer:
    body = r.json()
    choice = body["choices"][0]
    version = int(r.headers.get("x-model-version", body["model"].rpartition("@v")[2]))
    return ChatAnswer(
        text=choice["message"]["content"],
        model=body["model"],
        version=version,
        finish_reason=choice["finish_reason"],
        usage=Usage.model_validate(body["usage"]),
    )


def _models(r: httpx.Response) -> list[ModelVersion]:
    return [ModelVersion.model_validate(m) for m in r.json()["data"]]


# --------------------------------------------------------------------------- the clients


class _Base:
    def __init__(self, url: str, api_key: str | None, timeout: float):
        self.url = url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout = timeout
        self._name: str | None = None  # the served model's name, read once from /v1/models


class Client(_Base):
    """Sync client. `Client(url, api_key=None, timeout=60)`; use it as a context manager, or `close()` it."""

    def __init__(
        self, url: str = DEFAULT_URL, *, api_key: str | None = None, timeout: float = 60, transport: httpx.BaseTransport | None = None
    ):
        super().__init__(url, api_key, timeout)
        self._http = httpx.Client(base_url=self.url, headers=self.headers, timeout=timeout, transport=transport)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, call: _Call[T]) -> T:
        r = self._http.request(call.method, call.path, json=call.json, params=call.params, headers=call.headers)
        _raise_for(r)
        return call.parse(r)

    def edit(
        self,
        prompt: str | None = None,
        target_new: str | None = None,
        *,
        messages: Sequence[dict] | None = None,
        idempotency_key: str | None = None,
        **fields: Any,
    ) -> Accepted:
        """Queue one edit: `prompt` -> `target_new`, or `messages` (user question, assistant answer).
        `fields`: subject, task, instruction, rephrase_prompts, locality, portability."""
        return self._send(_edit_call(prompt, target_new, messages, idempotency_key, fields))

    def edit_batch(self, edits: Sequence[dict], *, idempotency_key: str | None = None) -> Accepted:
        """Several edits applied as one version."""
        return self._send(_post_edit({"edits": list(edits)}, idempotency_key))

    def edits(self, *, status: str | None = None, limit: int | None = None, cursor: str | None = None) -> EditPage:
        """One page, newest first; pass `next_cursor` as `cursor` for the next."""
        return self._send(_list_call(status, limit, cursor))

    def get_edit(self, edit_id: str) -> Edit:
        return self._send(_Call("GET", f"/edits/{edit_id}", _model(Edit)))

    def wait(self, edit_id: str, *, timeout: float = 60, poll: float = 0.1, statuses: Sequence[str] = TERMINAL) -> Edit:
        """The edit once its status is one of `statuses` (applied, failed, rolled_back)."""
        deadline = time.monotonic() + timeout
        while True:
            edit = self.get_edit(edit_id)
            if edit.status in statuses:
                return edit
            if time.monotonic() > deadline:
                raise WaitTimeout(edit, timeout)
            time.sleep(poll)

    def rollback(self, edit_id: str) -> Accepted:
        """Roll the edit back (a queued edit is cancelled); `wait(id)` for `rolled_back`."""
        return self._send(_Call("DELETE", f"/edits/{edit_id}", _model(Accepted)))

    def metrics(self, edit_id: str, *, wait: float = 0, poll: float = 0.1) -> Metrics:
        """The edit's scores; with `wait` > 0, polls up to that many seconds until they are ready."""
        deadline = time.monotonic() + wait
        while True:
            m = self._send(_Call("GET", f"/edits/{edit_id}/metrics", _model(Metrics)))
            if m.ready or time.monotonic() >= deadline:
                return m
            time.sleep(poll)

    def generate(
        self,
        prompt: str,
        *,
        max_new_tokens: int = 32,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
        version: int | None = None,
    ) -> Generation:
        """Plain continuation of `prompt` on the newest version, or on `version`."""
        return self._send(_generate_call(prompt, max_new_tokens, temperature, top_p, seed, version))

    def chat(
        self,
        messages: str | Sequence[dict],
        *,
        version: int | None = None,
        max_tokens: int | None = None,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
        stop: Sequence[str] | None = None,
    ) -> ChatAnswer:
        """A question (str) or OpenAI-style messages, through the chat template; greedy by default."""
        return self._send(_chat_call(self._served_name(), messages, version, max_tokens, temperature, top_p, seed, stop))

    def model(self) -> ModelInfo:
        return self._send(_Call("GET", "/model", _model(ModelInfo)))

    def models(self) -> list[ModelVersion]:
        """The served name (newest version first), then `<name>@v<K>` for every version in the store."""
        return self._send(_Call("GET", "/v1/models", _models))

    def _served_name(self) -> str:
        if self._name is None:
            self._name = self.models()[0].id
        return self._name


class AsyncClient(_Base):
    """Async client, the same methods as `Client`, awaited."""

    def __init__(
        self, url: str = DEFAULT_URL, *, api_key: str | None = None, timeout: float = 60, transport: httpx.AsyncBaseTransport | None = None
    ):
        super().__init__(url, api_key, timeout)
        self._http = httpx.AsyncClient(base_url=self.url, headers=self.headers, timeout=timeout, transport=transport)

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def _send(self, call: _Call[T]) -> T:
        r = await self._http.request(call.method, call.path, json=call.json, params=call.params, headers=call.headers)
        _raise_for(r)
        return call.parse(r)

    async def edit(
        self,
        prompt: str | None = None,
        target_new: str | None = None,
        *,
        messages: Sequence[dict] | None = None,
        idempotency_key: str | None = None,
        **fields: Any,
    ) -> Accepted:
        return await self._send(_edit_call(prompt, target_new, messages, idempotency_key, fields))

    async def edit_batch(self, edits: Sequence[dict], *, idempotency_key: str | None = None) -> Accepted:
        return await self._send(_post_edit({"edits": list(edits)}, idempotency_key))

    async def edits(self, *, status: str | None = None, limit: int | None = None, cursor: str | None = None) -> EditPage:
        return await self._send(_list_call(status, limit, cursor))

    async def get_edit(self, edit_id: str) -> Edit:
        return await self._send(_Call("GET", f"/edits/{edit_id}", _model(Edit)))

    async def wait(self, edit_id: str, *, timeout: float = 60, poll: float = 0.1, statuses: Sequence[str] = TERMINAL) -> Edit:
        deadline = time.monotonic() + timeout
        while True:
            edit = await self.get_edit(edit_id)
            if edit.status in statuses:
                return edit
            if time.monotonic() > deadline:
                raise WaitTimeout(edit, timeout)
            await asyncio.sleep(poll)

    async def rollback(self, edit_id: str) -> Accepted:
        return await self._send(_Call("DELETE", f"/edits/{edit_id}", _model(Accepted)))

    async def metrics(self, edit_id: str, *, wait: float = 0, poll: float = 0.1) -> Metrics:
        deadline = time.monotonic() + wait
        while True:
            m = await self._send(_Call("GET", f"/edits/{edit_id}/metrics", _model(Metrics)))
            if m.ready or time.monotonic() >= deadline:
                return m
            await asyncio.sleep(poll)

    async def generate(
        self,
        prompt: str,
        *,
        max_new_tokens: int = 32,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
        version: int | None = None,
    ) -> Generation:
        return await self._send(_generate_call(prompt, max_new_tokens, temperature, top_p, seed, version))

    async def chat(
        self,
        messages: str | Sequence[dict],
        *,
        version: int | None = None,
        max_tokens: int | None = None,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
        stop: Sequence[str] | None = None,
    ) -> ChatAnswer:
        name = await self._served_name()
        return await self._send(_chat_call(name, messages, version, max_tokens, temperature, top_p, seed, stop))

    async def model(self) -> ModelInfo:
        return await self._send(_Call("GET", "/model", _model(ModelInfo)))

    async def models(self) -> list[ModelVersion]:
        return await self._send(_Call("GET", "/v1/models", _models))

    async def _served_name(self) -> str:
        if self._name is None:
            self._name = (await self.models())[0].id
        return self._name

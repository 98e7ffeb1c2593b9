"""Every error as RFC 9457 problem details (`application/problem+json`).

Code raises `Problem(status, title, detail)`; the handlers installed by
`install` also turn FastAPI's validation errors (422), Starlette's HTTP
errors (404 for unknown routes, 405, ...) and anything unexpected (500) into
the same shape, so a client parses one error format.

Under `/v1` (the OpenAI-compatible routes) the same errors take OpenAI's shape,
`{"error": {"message", "type", "param", "code"}}`, which OpenAI's SDKs parse;
there a validation error is a 400, as OpenAI answers it.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

log = logging.getLogger(__name__)

MEDIA_TYPE = "application/problem+json"
TYPE_BASE = "urn:instructedit:problem:"


class Problem(Exception):
    """An error a client can act on. `kind` names the problem type (a URN)."""

    def __init__(self, status: int, kind: str, detail: str, *, title: str | None = None, headers: dict | None = None, **extra: Any):
        super().__init__(detail)
        self.status = status
        self.type = TYPE_BASE + kind
        self.title = title or HTTPStatus(status).phrase
        self.detail = detail
        self.headers = headers
        self.extra = extra


class ProblemDetails(BaseModel):
    """The response body of every error (RFC 9457)."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None


OPENAI_PREFIX = "/v1/"
OPENAI_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "invalid_request_error",
                409: "invalid_request_error", 422: "invalid_request_error", 429: "rate_limit_error"}


def openai_error(status: int, type_: str, detail: str, *, param: str | None = None) -> dict:
    """The body of an error on /v1. `code` is the problem type's last part, in snake case."""
    kind = OPENAI_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    code = type_.removeprefix(TYPE_BASE).replace("-", "_") if type_.startswith(TYPE_BASE) else None
    return {"error": {"message": detail, "type": kind, "param": param, "code": code}}


def problem_response(request: Request, status: int, type_: str, title: str, detail: str, headers=None, **extra) -> JSONResponse:
    if request.url.path.startswith(OPENAI_PREFIX):
        param = extra.get("param")
        if type_ == TYPE_BASE + "validation":
            param = _param(extra.get("errors") or [])
        status = 400 if status == 422 else status  # OpenAI answers every invalid request with 400
        return JSONResponse(openai_error(status, type_, detail, param=param), status_code=status, headers=headers)
    body = {"type": type_, "title": title, "status": status, "detail": detail, "instance": request.url.path, **extra}
    return JSONResponse(jsonable_encoder(body), status_code=status, media_type=MEDIA_TYPE, headers=headers)


def _param(errors: list[dict]) -> str | None:
    """The request field a validation error is about, as OpenAI names it (`messages.0.role`)."""
    if not errors:
        return None
    loc = [str(p) for p in errors[0]["loc"]]
    return ".".join(loc[1:] if loc[:1] == ["body"] else loc) or None


async def _problem(request: Request, exc: Problem) -> JSONResponse:
    return problem_response(request, exc.status, exc.type, exc.title, exc.detail, exc.headers, **exc.extra)


async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in exc.errors()]
    first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
    where = ".".join(str(p) for p in first["loc"])
    detail = f"{where}: {first['msg']}" + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else "")
    return problem_response(request, 422, TYPE_BASE + "validation", "Request validation failed", detail, errors=errors)


async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    title = HTTPStatus(exc.status_code).phrase
    detail = exc.detail if isinstance(exc.detail, str) else title
    headers = dict(getattr(exc, "headers", None) or {})
    if exc.status_code == 404 and detail == title:
        detail = f"no route {request.method} {request.url.path}"
    elif exc.status_code == 405:
        # Starlette names the methods of the first route on the path only; /edits has two.
        headers["Allow"] = ", ".join(_methods_on_path(request))
        detail = f"{request.method} is not allowed on {request.url.path}; allowed: {headers['Allow']}"
    elif exc.status_code == 400 and isinstance(exc.__cause__, UnicodeDecodeError):
        detail = f"the body is not valid UTF-8 JSON ({exc.__cause__.reason} at byte {exc.__cause__.start})"
    return problem_response(request, exc.status_code, "about:blank", title, detail, headers or None)


def _methods_on_path(request: Request) -> list[str]:
    methods: set[str] = set()
    for route in getattr(request.app.state, "api_routes", ()):
        match, _ = route.matches(request.scope)
        if match != Match.NONE and getattr(route, "methods", None):
            methods |= set(route.methods)
    return sorted(methods)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem_response(request, 500, "about:blank", "Internal Server Error", f"{type(exc).__name__}: {exc}")


async def _store_unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.warning("%s %s: store unavailable: %s", request.method, request.url.path, exc)
    return problem_response(
        request, 503, TYPE_BASE + "store-unavailable", "Service Unavailable",
        f"the store cannot take writes now ({exc}); nothing was recorded, retry later", {"Retry-After": "5"},
    )  # fmt: skip


def install(app: FastAPI) -> None:
    from .store import StoreUnavailable

    app.add_exception_handler(StoreUnavailable, _store_unavailable)
    app.add_exception_handler(Problem, _problem)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(Exception, _unexpected)


def responses(*statuses: int) -> dict[int | str, dict]:
    """OpenAPI entries saying that these statuses answer with problem+json."""
    return {s: {"model": ProblemDetails, "content": {MEDIA_TYPE: {}}, "description": HTTPStatus(s).phrase} for s in statuses}


def not_found(what: str, ident: str) -> Problem:
    return Problem(404, f"{what}-not-found", f"no {what} with id {ident!r}", title=f"{what.capitalize()} not found")

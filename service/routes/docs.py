"""The OpenAPI schema and its interactive docs, behind the same keys as the API
(FastAPI's own `/docs` and `/openapi.json` cannot take dependencies)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

from ..auth import AUTH_RESPONSES, RequireAsk

router = APIRouter(dependencies=[RequireAsk], responses=AUTH_RESPONSES, include_in_schema=False)


@router.get("/openapi.json")
def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@router.get("/docs")
def docs(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{request.app.title} - docs")

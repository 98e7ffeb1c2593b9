"""`create_app(settings)`: the FastAPI application. No app exists at import time.

The lifespan opens the runtime (model, editor, store, queue, worker; see
`runtime.open_runtime`) and closes it on shutdown. Tests pass ready-made
`components` (a tiny model and an untrained editor) instead of loading them.
The API keys are read here, before anything heavy, so a bad key file or an
unprotected public bind fails at once (`auth.check_bind`).
"""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI

from . import errors
from .auth import Auth, KeyRing, check_bind
from .bodylimit import BodyLimit
from .components import Components
from .ratelimit import RateLimiter
from .routes import ROUTERS, ui
from .runtime import open_runtime
from .settings import Settings


def create_app(settings: Settings, *, components: Components | None = None) -> FastAPI:
    keyring = KeyRing.from_settings(settings)
    check_bind(settings, keyring)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        async with open_runtime(settings, components) as runtime:
            app.state.runtime = runtime
            yield

    app = FastAPI(
        title="instructedit",
        summary="Knowledge edits for a served LLM: versioned, reversible, one writer.",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,  # routes/docs.py serves them behind the keys
        redoc_url=None,
        openapi_url=None,
        responses=errors.responses(400, 413),  # any route: a body that is not JSON / too large
    )
    app.state.auth = Auth(keyring, RateLimiter(settings.rate_limit_per_second, settings.rate_limit_burst))
    errors.install(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    for router in ROUTERS:
        app.include_router(router)
    app.state.api_routes = [route for router in ROUTERS for route in router.routes]  # for the Allow header of a 405
    app.openapi = _tailored(app.openapi, settings, auth_enabled=keyring.enabled)
    ui.mount(app)
    return app


def _tailored(openapi, settings: Settings, *, auth_enabled: bool):
    """FastAPI's schema, made to state what this configuration enforces. Without
    keys nothing asks for a bearer token, so the schema must not say it does
    (a generated client, or schemathesis' ignored_auth check, would believe it);
    the max_new_tokens cap is a setting, so the schema's maximum is set here."""

    def schema() -> dict:
        doc = openapi()  # cached by FastAPI: doing this again changes nothing
        schemas = doc.get("components", {}).get("schemas", {})
        cap = settings.max_new_tokens
        for name, field in (("GenerateRequest", "max_new_tokens"), ("CompletionRequest", "max_tokens"),
                            ("ChatCompletionRequest", "max_tokens"), ("ChatCompletionRequest", "max_completion_tokens")):
            prop = schemas.get(name, {}).get("properties", {}).get(field)
            if prop is not None:
                prop["maximum"] = cap
                if isinstance(prop.get("default"), int):
                    prop["default"] = min(prop["default"], cap)
        if not auth_enabled:
            doc.get("components", {}).pop("securitySchemes", None)
            for item in doc.get("paths", {}).values():
                for op in item.values():
                    op.pop("security", None)
                    for status in ("401", "403", "429"):
                        op.get("responses", {}).pop(status, None)
        return doc

    return schema

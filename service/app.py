"""`create_app(settings)`: the FastAPI application. No app exists at import time.

The lifespan opens the runtime (model, editor, store, queue, worker; see
`runtime.open_runtime`) and closes it on shutdown. Tests pass ready-made
`components` (a tiny model and an untrained editor) instead of loading them.
"""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI

from . import errors
from .components import Components
from .routes import ROUTERS, ui
from .runtime import open_runtime
from .settings import Settings


def create_app(settings: Settings, *, components: Components | None = None) -> FastAPI:
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
    )
    errors.install(app)
    for router in ROUTERS:
        app.include_router(router)
    ui.mount(app)
    return app

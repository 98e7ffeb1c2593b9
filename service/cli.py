"""`serve(settings)`: run the service with uvicorn (wired to `instructedit serve`)."""

from __future__ import annotations

from .settings import Settings


def serve(settings: Settings) -> None:
    """One process, one worker: the model and the writer live together."""
    import uvicorn

    from .app import create_app

    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level, workers=1)

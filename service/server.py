"""`serve(settings)`: run the service with uvicorn (the `instructedit serve` command calls it)."""

from __future__ import annotations

import uvicorn

from .app import create_app
from .settings import Settings


def serve(settings: Settings) -> None:
    """One process, one worker: the model and the writer live together."""
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level, workers=1)

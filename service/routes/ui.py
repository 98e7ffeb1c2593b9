"""The web console: static files shipped in `service/ui`, served at `/ui/`.

No build step and no CDN: plain HTML, CSS and JavaScript that call the same
HTTP API as any other client (with the API key the page asks for on a 401).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

UI_DIR = Path(__file__).resolve().parent.parent / "ui"


def mount(app: FastAPI) -> None:
    """`/ui/` serves index.html and its assets; `/ui` redirects there."""
    app.add_api_route("/ui", lambda: RedirectResponse("/ui/"), include_in_schema=False)
    app.mount("/ui/", StaticFiles(directory=UI_DIR, html=True), name="ui")

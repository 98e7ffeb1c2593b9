"""One router per resource; `app.create_app` includes them all."""

from . import edits, generate, health, model, versions

ROUTERS = (edits.router, generate.router, model.router, versions.router, health.router)

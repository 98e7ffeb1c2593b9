"""One router per resource; `app.create_app` includes them all."""

from . import docs, edits, generate, health, model, v1, versions

ROUTERS = (edits.router, generate.router, model.router, versions.router, v1.router, health.router, docs.router)

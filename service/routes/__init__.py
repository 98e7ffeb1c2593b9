"""One router per resource; `app.create_app` includes them all."""

from . import docs, edits, generate, health, model

ROUTERS = (edits.router, generate.router, model.router, health.router, docs.router)

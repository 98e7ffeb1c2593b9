"""The HTTP editing service: `create_app(settings)`, `serve(settings)`, `Settings`."""

from .settings import Settings

__all__ = ["Settings", "create_app", "serve"]


def __getattr__(name: str):
    # Lazy, so `from service import Settings` does not import torch and FastAPI.
    if name == "create_app":
        from .app import create_app

        return create_app
    if name == "serve":
        from .server import serve

        return serve
    raise AttributeError(name)

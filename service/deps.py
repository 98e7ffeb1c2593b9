"""Typed dependencies, so route signatures read like sentences (the template's deps.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from .runtime import Runtime


def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", min_length=1, max_length=255, description="retrying with the same key returns the same edit"),
]

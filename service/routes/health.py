"""Liveness and readiness (open to all, for probes), and Prometheus metrics (admin)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from .. import operations as ops
from ..auth import AUTH_RESPONSES, RequireAdmin
from ..deps import RuntimeDep
from ..errors import Problem, responses
from ..schemas import Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
def healthz():
    """The process is alive and answering."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses=responses(503))
async def readyz(rt: RuntimeDep):
    """Model loaded, store open, queue reachable, worker running."""
    checks = await ops.readiness(rt)
    if not all(checks.values()):
        down = ", ".join(k for k, ok in checks.items() if not ok)
        raise Problem(503, "not-ready", f"not ready: {down}", checks=checks)
    return Health(status="ok", checks=checks)


@router.get("/metrics", response_class=Response, dependencies=[RequireAdmin], responses=AUTH_RESPONSES)
async def metrics(rt: RuntimeDep):
    """Prometheus text format."""
    return Response(await ops.render_metrics(rt), media_type=CONTENT_TYPE_LATEST)

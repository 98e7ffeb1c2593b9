"""Everything one running service holds, opened and closed in one place.

`open_runtime` is the body of the app's lifespan; tests of the worker use it
without HTTP. On open it rebuilds the served weights from the store alone
(the head version's active deltas), so a restarted service serves the same
`state_sha256` whatever Redis remembers.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import threading
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import AsyncIterator

from editor_core.refit import QUICK, RefitConfig
from editor_core.routing import RouterConfig

from .components import Components, load_components
from .health import Health
from .keys import RedisKeys
from .queue import JobQueue, make_queue
from .settings import Settings
from .state import ModelState
from .store import Store
from .telemetry import Telemetry
from .versions import Versions
from .worker import Worker

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    components: Components
    store: Store
    state: ModelState
    queue: JobQueue
    worker: Worker
    telemetry: Telemetry
    generation_slots: asyncio.Semaphore
    # Serving-side tokenizer use (encode/decode): the Rust tokenizer is not
    # safe against concurrent calls that reconfigure it; the worker has a copy.
    tokenizer_lock: threading.Lock
    versions: Versions  # any stored version, for pinned requests (a small LRU of built ones)
    health: Health  # the edited model's health per version, for GET /model


@asynccontextmanager
async def open_runtime(settings: Settings, components: Components | None = None, *, start_worker: bool = True) -> AsyncIterator[Runtime]:
    if components is None:
        components = await asyncio.to_thread(load_components, settings)
    components.editor.eval()
    model = components.model
    state = await asyncio.to_thread(
        ModelState,
        model,
        components.tokenizer,
        components.editor.spec.edit_params,
        memory=settings.memory,
        router=RouterConfig(
            threshold=settings.router_threshold,
            narrow_threshold=settings.router_narrow_threshold,
            relation_check=settings.router_relation_check,
        ),
    )
    identity = {"model": getattr(model, "name_or_path", ""), "edit_params": list(state.names)}
    store = Store.open(settings.store_dir, identity=identity, base_sha256=state.base_sha256)
    queue = worker = None
    try:
        await asyncio.to_thread(_restore, store, state)
        telemetry = Telemetry()
        telemetry.model_version.set(state.current().version)
        # Keys carry the store's id: two stores can never take each other's jobs.
        queue = make_queue(settings.redis_url, RedisKeys(f"{settings.queue_name}:{store.store_id}"))
        worker = Worker(
            store=store,
            state=state,
            queue=queue,
            editor=components.editor,
            tokenizer=copy.deepcopy(components.tokenizer),
            telemetry=telemetry,
            max_tries=settings.max_tries,
            snapshot_every=settings.snapshot_every,
            refit=RefitConfig() if settings.refit else None,
            quick=QUICK if settings.quick_refit else None,
        )
        if start_worker:
            worker.start()
        slots = asyncio.Semaphore(settings.max_concurrent_generations)
        versions = Versions(state, store, size=settings.version_cache_size)
        health = Health(state, copy.deepcopy(components.tokenizer))
        yield Runtime(settings, components, store, state, queue, worker, telemetry, slots, threading.Lock(), versions, health)
    finally:
        if worker is not None:
            await worker.stop()
        if queue is not None:
            await queue.close()
        store.close()


def _restore(store: Store, state: ModelState) -> None:
    """Serve the store's head version: base + its active deltas."""
    head = store.head()
    snapshot = state.assemble(
        head.version, head.active, store.delta_of_edit, store.scope_of, lambda active: store.best_snapshot(list(active), state.device)
    )
    if snapshot.state_sha256 != head.state_sha256:
        # Same store, other arithmetic (device or library changed): serve what we computed, loudly.
        log.error("rebuilt version %d has state_sha256 %s, the store recorded %s", head.version, snapshot.state_sha256, head.state_sha256)
    state.publish(snapshot)
    state.load_work(snapshot.weights or state.base)
    log.info("serving version %d (%d active edits)", head.version, len(head.active))

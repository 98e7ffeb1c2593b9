"""Any stored version as a `Snapshot`: the one place that answers "give me version K".

The newest version is the one `ModelState` serves. An older one (the base,
version 0, included) is rebuilt from the store exactly as the worker built it
(`ModelState.build`: base + its active deltas from the longest snapshot
prefix, never by subtraction), as a new module tree that shares every tensor
but the edited weights; the newest version is never touched.

The bound on what this costs:

* memory: at most `size` versions are kept built (least recently used goes
  first); each one holds its own edited weights (SmolLM2-135M: 30.4 MB in fp32)
  and a shell of module objects. A version being generated on stays alive
  until its generations end, as with the served one.
* time: a version not in the cache is rebuilt once, one rebuild at a time
  (a second request for it waits and then finds it cached): at most
  `snapshot_every` deltas are re-added after the nearest snapshot when the
  version's edits were never rolled back, all of its deltas otherwise.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from .state import ModelState, Snapshot
from .store import Store, VersionRow


class VersionNotFound(LookupError):
    """The store has no such version."""

    def __init__(self, version: int, newest: int):
        super().__init__(f"version {version} is not in the store; versions 0 to {newest} can be asked for")
        self.version, self.newest = version, newest


class Versions:
    def __init__(self, state: ModelState, store: Store, *, size: int):
        if size < 1:
            raise ValueError("size must be at least 1")
        self.state, self.store, self.size = state, store, size
        self._cache: OrderedDict[int, Snapshot] = OrderedDict()
        self._lock = threading.Lock()  # guards the cache
        self._building = threading.Lock()  # one rebuild at a time
        self.rebuilds = 0  # how many versions were rebuilt (for tests and benches)

    def get(self, version: int | None = None) -> Snapshot:
        """The snapshot of `version` (None: the newest served). May rebuild: call
        it in a thread, not on the event loop."""
        current = self.state.current()
        if version is None or version == current.version:
            self._remember(current)  # costs nothing while it is served, and keeps it once superseded
            return current
        found = self._cached(version)
        if found is not None:
            return found
        with self._building:
            found = self._cached(version)  # built by the request we waited for
            if found is not None:
                return found
            row = self.store.version(version)
            if row is None:
                raise VersionNotFound(version, self.store.head().version)
            snap = self._build(row)
            self._remember(snap)
            return snap

    def listing(self) -> list[VersionRow]:
        """Every version that can be asked for, oldest first."""
        return self.store.versions()

    def cached(self) -> list[int]:
        with self._lock:
            return list(self._cache)

    def _build(self, row: VersionRow) -> Snapshot:
        snap = self.state.assemble(row.version, row.active, self.store.delta_at(row), self.store.scope_of,
                                   lambda active: self.store.best_snapshot(list(active), self.state.device))
        self.rebuilds += 1
        return snap

    def _cached(self, version: int) -> Snapshot | None:
        with self._lock:
            snap = self._cache.get(version)
            if snap is not None:
                self._cache.move_to_end(version)
            return snap

    def _remember(self, snap: Snapshot) -> None:
        with self._lock:
            self._cache[snap.version] = snap
            self._cache.move_to_end(snap.version)
            while len(self._cache) > self.size:
                self._cache.popitem(last=False)

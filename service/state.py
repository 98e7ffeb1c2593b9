"""The weights the service serves, and how a generation sees a consistent set.

A version is the base weights plus its ordered active edits, held one of two ways
(`Settings.memory`):

* **routed** (the default): a `RoutedMemory` (`editor_core.routing`). Each
  request is routed once, on the user's question, to at most one edit, and runs
  on the base plus that edit's delta alone (`Snapshot.tree_for`); a question in
  no edit's scope runs on the exact base weights. Edits never add up, so the
  thousandth edit leaves the model as healthy as the first.
* **summed**: base + every active delta in commit order, one weight set (the
  service's behaviour before; it collapses after a few edits of the shipped
  editor, kept for comparison).

Either way a published version is immutable and publishing is one reference
assignment, so a generation takes `current()` once and runs wholly on that
version while newer ones are published beside it: never half an edit. Module
trees are `fork`s that share every tensor with the loaded model except the
edited weights; the worker has a tree of its own (`work`, always the base in
routed mode) for `compute_delta`, whose hooks never reach a serving tree.
"""

from __future__ import annotations

import copy
import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import nn

from editor_core.delta import Delta, base_weights, load_weights, materialize, state_sha256, tensors_sha256
from editor_core.routing import Key, MemoryEntry, RoutedMemory, RouterConfig

# (n, weights of active[:n]) of a stored snapshot whose edits are a prefix of a list; None if none
FindSnapshot = Callable[[Sequence[str]], "tuple[int, dict[str, torch.Tensor]] | None"]


@dataclass(frozen=True)
class Snapshot:
    """One published version: never changed after publishing."""

    version: int
    active: tuple[str, ...]
    model: nn.Module  # summed: this version's tree; routed: the base tree
    state_sha256: str
    memory: RoutedMemory | None = None  # routed: the active edits and their scopes
    trees: Callable[[MemoryEntry], nn.Module] | None = field(default=None, repr=False, compare=False)
    weights: dict[str, torch.Tensor] | None = field(default=None, repr=False, compare=False)  # summed: the edited weights

    def tree_for(self, query: str) -> nn.Module:
        """The tree one request runs on, decided once on the user's question."""
        if self.memory is None:
            return self.model
        entry = self.memory.route(query).entry
        return self.model if entry is None else self.trees(entry)


def fork(model: nn.Module, weights: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """New module objects over the same tensors (parameters and buffers shared
    through deepcopy's memo), then `weights` swapped in as new Parameters."""
    memo = {id(t): t for t in model.parameters()}
    memo.update({id(t): t for t in model.buffers()})
    tree = copy.deepcopy(model, memo)
    if weights:
        load_weights(tree, weights)
    return tree


class ModelState:
    """Base copies of the edited weights, the published snapshot, the worker's tree.

    `template` is the model as loaded (the base); it is never run and never
    changed, so the caller's model object stays the base model."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer,
        names: Sequence[str],
        *,
        memory: str = "routed",
        router: RouterConfig | None = None,
        tree_cache: int = 16,
    ):
        if memory not in ("routed", "summed"):
            raise ValueError(f"memory must be 'routed' or 'summed', not {memory!r}")
        self.template = model
        self.tokenizer = tokenizer
        self.names = tuple(names)
        self.memory = memory
        self.router = router or RouterConfig()
        self.device = next(model.parameters()).device
        self.base = base_weights(model, self.names)
        self.base_sha256 = tensors_sha256(self.base)
        self.work = fork(model)
        self.base_tree = fork(model) if memory == "routed" else None  # routed: what unrelated questions run on
        self._trees: OrderedDict[str, nn.Module] = OrderedDict()  # delta sha256 -> base + that delta
        self._tree_cache = tree_cache
        self._tree_lock = threading.Lock()
        self._live: Snapshot | None = None
        self._lock = threading.Lock()

    @property
    def routed(self) -> bool:
        return self.memory == "routed"

    def current(self) -> Snapshot:
        """The version to serve now (read once; keep the object, not the state)."""
        with self._lock:
            if self._live is None:
                raise RuntimeError("no version published yet")
            return self._live

    def publish(self, snapshot: Snapshot) -> None:
        """The critical section: one reference swap."""
        with self._lock:
            self._live = snapshot

    # ------------------------------------------------------------------ building versions

    def assemble(
        self,
        version: int,
        active: Sequence[str],
        delta_of: Callable[[str], Delta],
        scope_of: Callable[[str], tuple[Key, ...]],
        find_snapshot: FindSnapshot | None = None,
    ) -> Snapshot:
        """The snapshot of a version, built off to the side (slow part, no lock):
        a pure function of the base and the ordered (edit, delta, scope) list."""
        if self.routed:
            entries = [MemoryEntry(e, delta_of(e), scope_of(e)) for e in active]
            return self.routed_snapshot(version, entries)
        weights = self.build(active, delta_of, find_snapshot)
        tree = fork(self.template, weights)
        return Snapshot(version, tuple(active), tree, state_sha256(tree, self.names), weights=weights)

    def routed_snapshot(self, version: int, entries: list[MemoryEntry]) -> Snapshot:
        memory = RoutedMemory(entries=list(entries), config=self.router)
        # No edit held: the base itself, with the base's hash (as the summed state has).
        digest = hashlib.sha256(f"{self.base_sha256}:{memory.sha256()}".encode()).hexdigest() if entries else self.base_sha256
        return Snapshot(version, tuple(e.edit_id for e in entries), self.base_tree, digest, memory, self.tree_of)

    def tree_of(self, entry: MemoryEntry) -> nn.Module:
        """base + one edit's delta, as a tree (the last `tree_cache` built are kept)."""
        key = entry.delta.sha256()
        with self._tree_lock:
            cached = self._trees.get(key)
            if cached is not None:
                self._trees.move_to_end(key)
                return cached
        tree = fork(self.template, materialize(self.base, [entry.delta]))
        with self._tree_lock:
            self._trees[key] = tree
            while len(self._trees) > self._tree_cache:
                self._trees.popitem(last=False)
        return tree

    def build(
        self, active: Sequence[str], delta_of: Callable[[str], Delta], find_snapshot: FindSnapshot | None = None
    ) -> dict[str, torch.Tensor]:
        """Summed: base + the deltas of `active`, in order, from the longest stored
        snapshot prefix (else the base); never subtracts. An empty list gives the
        base tensors themselves, so rolling everything back is bit-identical."""
        active = list(active)
        if not active:
            return dict(self.base)
        start, n = self.base, 0
        found = find_snapshot(active) if find_snapshot is not None else None
        if found is not None:
            n, start = found
        return materialize(start, [delta_of(e) for e in active[n:]])

    def load_work(self, weights: dict[str, torch.Tensor]) -> None:
        """Point the worker's own tree at `weights` (only the worker calls this)."""
        load_weights(self.work, weights)

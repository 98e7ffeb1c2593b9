"""The weights the service serves, and how a generation sees a consistent set.

The choice (issue: "one generation runs wholly on one version"): generate on a
snapshot. Each published version is its own module tree (`fork`): new module
objects that share every tensor with the loaded model except the edited weights,
which are that version's tensors. Publishing is one reference assignment, so:

* a generation takes `current()` once and runs wholly on that tree, however long
  it takes, while newer versions are published beside it: never half an edit;
* the worker never waits for generations to finish, and no generation waits
  for an edit (a readers-writer lock would make the swap wait on the slowest
  generation, and the edit's hooks would fire inside generations);
* the cost is the edited weights of each version still in use, plus ~25 ms of
  module copying per version (SmolLM2-135M, CPU).

The worker has a tree of its own (`work`) for `compute_delta` (which installs
forward hooks) and for the metrics, so its hooks never touch a serving tree.
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from editor_core.delta import Delta, base_weights, load_weights, materialize, state_sha256, tensors_sha256

from .store import Store


@dataclass(frozen=True)
class Snapshot:
    """One published version: its tree is never changed after publishing."""

    version: int
    active: tuple[str, ...]
    model: nn.Module
    state_sha256: str


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

    def __init__(self, model: nn.Module, tokenizer, names: Sequence[str]):
        self.template = model
        self.tokenizer = tokenizer
        self.names = tuple(names)
        self.device = next(model.parameters()).device
        self.base = base_weights(model, self.names)
        self.base_sha256 = tensors_sha256(self.base)
        self.work = fork(model)
        self._live: Snapshot | None = None
        self._lock = threading.Lock()

    def current(self) -> Snapshot:
        """The version to serve now (read once; keep the object, not the state)."""
        with self._lock:
            if self._live is None:
                raise RuntimeError("no version published yet")
            return self._live

    def prepare(self, version: int, active: Sequence[str], weights: dict[str, torch.Tensor]) -> Snapshot:
        """The snapshot of a version, built off to the side (slow part, no lock)."""
        tree = fork(self.template, weights)
        return Snapshot(version, tuple(active), tree, state_sha256(tree, self.names))

    def publish(self, snapshot: Snapshot) -> None:
        """The critical section: one reference swap."""
        with self._lock:
            self._live = snapshot

    def build(self, store: Store, active: Sequence[str], delta_of: Callable[[str], Delta]) -> dict[str, torch.Tensor]:
        """base + the deltas of `active`, in order, from the store's longest snapshot
        prefix (else the base); never subtracts. An empty list gives the base
        tensors themselves, so rolling everything back is bit-identical."""
        active = list(active)
        if not active:
            return dict(self.base)
        start, n = self.base, 0
        found = store.best_snapshot(active, self.device)
        if found is not None:
            n, start = found
        return materialize(start, [delta_of(e) for e in active[n:]])

    def load_work(self, weights: dict[str, torch.Tensor]) -> None:
        """Point the worker's own tree at `weights` (only the worker calls this)."""
        load_weights(self.work, weights)

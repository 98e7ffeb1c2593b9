"""The edited model's health, for `GET /model`.

* `max_norm_ratio`: the largest ‖ΔW‖/‖W‖ of an edited matrix that any question
  can meet. Routed, a question meets one edit's delta at most, so it is the
  largest single delta; summed, the whole sum.
* `capability`: % of the capability set (the fixed probes, `probes.PROBES`) whose
  greedy answer on this version is the unedited model's, word for word. Routed,
  only probes that fall in some edit's scope can differ, and only those are run.

Both are computed once per version and kept (the last few versions); `GET /model`
never waits for the capability run (`peek`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from editor_core import metrics
from editor_core.delta import relative_norm

from .probes import PROBES
from .state import ModelState, Snapshot, fork


class Health:
    def __init__(self, state: ModelState, tokenizer, *, keep: int = 8):
        self.state, self.tokenizer, self.keep = state, tokenizer, keep
        self._norms: dict[str, float] = {}  # delta sha256 -> its largest relative norm
        self._base_answers: list[str] | None = None
        self._cache: OrderedDict[int, dict] = OrderedDict()
        self._running: set[int] = set()  # versions whose capability run is under way
        self._lock = threading.Lock()  # the cache and the running set
        self._compute = threading.Lock()

    def peek(self, snap: Snapshot) -> dict:
        """What is known of `snap` now, without waiting: the capability set is run
        on a thread of its own the first time a version is asked about, and reads
        null (`capability_pending`) until it is done."""
        with self._lock:
            done = self._cache.get(snap.version)
            if done is not None and done["state_sha256"] == snap.state_sha256:
                return done
            start = snap.version not in self._running
            self._running.add(snap.version)
        if start:
            threading.Thread(target=self.of, args=(snap,), name="instructedit-health", daemon=True).start()
        return {"state_sha256": snap.state_sha256, "active_edits": len(snap.active), "max_norm_ratio": self._norm(snap),
                "capability": None, "capability_pending": True}

    def of(self, snap: Snapshot) -> dict:
        """Everything, computed now (generates a few probes): call it off the event loop."""
        try:
            out = {"state_sha256": snap.state_sha256, "active_edits": len(snap.active), "max_norm_ratio": self._norm(snap)}
            with self._compute:  # one capability run at a time
                out.update(self._capability(snap))
            with self._lock:
                self._cache[snap.version] = out
                while len(self._cache) > self.keep:
                    self._cache.popitem(last=False)
            return out
        finally:
            with self._lock:
                self._running.discard(snap.version)

    def _norm(self, snap: Snapshot) -> float:
        base = self.state.base
        if snap.memory is None:
            return max((float((snap.weights[n].float() - w.float()).norm() / w.float().norm()) for n, w in base.items()), default=0.0)
        worst = 0.0
        for entry in snap.memory.entries:
            sha = entry.delta.sha256()
            if sha not in self._norms:
                self._norms[sha] = max(relative_norm(l, r, base[n]) for n, (l, r) in entry.delta.factors.items())
            worst = max(worst, self._norms[sha])
        return worst

    def _capability(self, snap: Snapshot) -> dict:
        prompts = [p.prompt for p in PROBES]
        base_tree = self.state.base_tree
        if self._base_answers is None:
            self._base_answers = metrics.generate_answers(base_tree or fork(self.state.template), self.tokenizer, prompts)
        trees = [snap.tree_for(p) for p in prompts]
        changed_scope = [i for i, t in enumerate(trees) if t is not base_tree]
        same = [True] * len(prompts)
        for i in changed_scope:
            same[i] = metrics.generate_answers(trees[i], self.tokenizer, [prompts[i]])[0] == self._base_answers[i]
        return {"capability": 100.0 * sum(same) / len(same), "capability_n": len(same), "capability_routed_into_edits": len(changed_scope)}

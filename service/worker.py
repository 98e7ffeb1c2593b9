"""The one writer: applies edit and rollback jobs, one at a time, in queue order.

For each job: count the try in the store (before any work, so a crash counts),
then compute the new weights off to the side, commit them to the store (one
transaction: version row, edit status, job done), swap them in (one reference
assignment, `ModelState.publish`), acknowledge the queue entry, and only then
compute the edit's metrics. Hence:

* a worker that dies before the commit leaves no trace: the job is still
  pending (stream) or unfinished (store) and is redone on restart;
* one that dies after the commit left the job done in the store: the restart
  rebuilds the weights from the store and only acknowledges the entry;
* an edit whose computation fails (bad input that shows only at compute time,
  an exception in the editor) is marked failed with its reason, never applied;
* a transient failure is retried: queue errors (Redis down, or restarted empty)
  with backoff, then a reconcile that re-enqueues every job the store knows as
  unfinished; other errors outside the editor by redoing the job, up to
  `max_tries` tries in all.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import torch

from editor_core.chat import chat_prompt
from editor_core.delta import Delta
from editor_core.records import EditRecord
from editor_core.refit import QUICK, RefitConfig, answers_exactly, refit_records
from editor_core.routing import Key, MemoryEntry, RoutedMemory

from . import chat
from .evaluation import measure
from .probes import PROBES
from .queue import Delivery, Job, JobQueue, QueueUnavailable
from .records import EditStatus, scope_of_records
from .state import ModelState, Snapshot, fork
from .store import EditRow, JobRow, Store, StoreUnavailable
from .telemetry import Telemetry

log = logging.getLogger(__name__)


MAX_PROBES_IN_SCOPE = 2  # an edit about one fact can share a probe's subject or two, never more


class EditFailed(Exception):
    """The editor could not make this edit; the job fails, nothing is applied."""


def _published_delta(work: "_MetricsWork") -> Delta:
    """The delta a routed edit was published with."""
    return next(e.delta for e in work.post.memory.entries if e.edit_id == work.edit_id)


def _is_quick_fit(delta: Delta) -> bool:
    """A refit's delta (by its metadata): what an edit is published with when the quick fit is on."""
    return "refit_steps" in delta.meta


def _non_finite(delta: Delta) -> str | None:
    """The first weight whose factors hold a NaN or an infinity, if any."""
    return next((n for n, (a, b) in delta.factors.items() if not (torch.isfinite(a).all() and torch.isfinite(b).all())), None)


@dataclass
class _MetricsWork:
    """An applied edit's background work: check that it took, refit it, score it."""

    edit_id: str
    records: list[EditRecord]
    pre: Snapshot  # the version before the edit
    post: Snapshot  # the version it produced
    check: bool = True  # False: a backfill of metrics only
    start: Delta | None = None  # the editor's own delta, where the full refit starts (None: computed again)


@dataclass
class _Finished:
    work: _MetricsWork
    took: bool | None
    delta: Delta | None  # a refit delta to commit, if one was fitted
    metrics: dict | None
    error: str | None = None
    refit: str | None = None  # the edit's refit state when no refit delta is committed (None: none needed)

    @property
    def edit_id(self) -> str:
        return self.work.edit_id


class Worker:
    """The writer loop (`run`), started by the app, or drained by a test (`drain`).

    Settings, keyword-only, with their defaults:
        max_tries (3): tries per job, counted in the store before work; a job
            that reaches it (say, it crashes the worker every time) is failed.
        snapshot_every (10): write the edited weights every K versions (0: never).
        block_ms (500): how long one queue read waits; also how soon `stop` is seen.
        retry_delay (0.1) and retry_delay_max (2.0): seconds of backoff after a
            transient failure, doubling up to the cap.
        compute_metrics (True): score each edit before/after once it is visible.
        refit (RefitConfig()): routed memory only: fit each applied edit's delta, from
            the editor's own, until its prompt generates the target with a margin and
            stops while other questions about its subject keep their answers
            (`editor_core.refit`; without a quick fit, an edit already there is left as
            it is). None: never.
            Checks, refits and metrics run on one background thread of their own;
            the writer loop commits a refit as a new version when it is done.
        quick (refit.QUICK): routed memory only: a short fit of the editor's delta on
            the edit's own question, before the edit is published, so that it shows
            in generated answers at once; its delta is narrow (questions worded
            like the edit's own reach it, `routing.MemoryEntry.narrow`) until the
            full refit, which starts again from the editor's delta, replaces it.
            None: publish the editor's delta as it is.
        on_checkpoint (None): called with (stage, job_id) at "computed" (before
            the commit) and "committed" (before the swap and the ack); tests
            raise a BaseException there to stand for the process dying.
    """

    def __init__(
        self,
        *,
        store: Store,
        state: ModelState,
        queue: JobQueue,
        editor,
        tokenizer,
        telemetry: Telemetry,
        max_tries: int = 3,
        snapshot_every: int = 10,
        block_ms: int = 500,
        retry_delay: float = 0.1,
        retry_delay_max: float = 2.0,
        compute_metrics: bool = True,
        refit: RefitConfig | None = RefitConfig(),
        quick: RefitConfig | None = QUICK,
        on_checkpoint: Callable[[str, str], None] | None = None,
    ):
        self.store, self.state, self.queue, self.editor = store, state, queue, editor
        self.tokenizer, self.telemetry = tokenizer, telemetry
        self.max_tries, self.snapshot_every, self.block_ms = max_tries, snapshot_every, block_ms
        self.retry_delay, self.retry_delay_max = retry_delay, retry_delay_max
        self.compute_metrics, self.on_checkpoint = compute_metrics, on_checkpoint
        self.refit = refit if state.routed else None
        self.quick = quick if state.routed else None
        self._editor_lock = threading.Lock()  # the writer and, after a restart, the background thread
        self._background = ThreadPoolExecutor(1, thread_name_prefix="instructedit-background")
        self._pending: list[Future] = []
        self._refit_tree = None  # base weights, for the background thread's refits (made on first use)
        self._deltas: dict[str, Delta] = {}  # edit id -> its delta now (a cache of the store)
        self._scopes: dict[str, tuple[Key, ...]] = {}
        self._task: asyncio.Task | None = None
        self._stopping = False
        self._needs_reconcile = True
        self._failures = 0
        self._backfill: deque[EditRow] = deque()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="instructedit-worker")

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    async def stop(self, timeout: float = 60.0) -> None:
        """Finish the job in hand, then stop (cancel after `timeout`)."""
        self._stopping = True
        self._background.shutdown(wait=False, cancel_futures=True)  # an unfinished check or refit is redone on restart
        if self._task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except asyncio.TimeoutError:
            self._task.cancel()
        except BaseException as e:  # the loop had died already; it was logged then
            log.debug("worker ended with %r", e)

    def request_reconcile(self) -> None:
        """Something was stored but not enqueued: compare store and queue soon."""
        self._needs_reconcile = True

    async def run(self, *, burst: bool = False) -> None:
        """Process jobs until `stop` (or, with burst, until the queue is empty)."""
        self._backfill = deque(self.store.edits_missing_metrics() if self.compute_metrics else ())
        for row in self.store.edits_pending_refit():  # a dead worker's unfinished checks and refits
            self._schedule(self._resume_work(row))
        try:
            await self._connect()
            while not self._stopping:
                ok, delivery = await self._next(0 if burst else self.block_ms)
                await self._collect()
                if delivery is not None:
                    await self._process_until_stored(delivery)
                elif ok and self._backfill:
                    self._backfill_one()
                elif ok and burst:
                    if not self._pending:
                        return
                    await asyncio.wait([asyncio.wrap_future(f) for f in self._pending])
        except BaseException:
            if not self._stopping:
                log.exception("the worker died; restart the service to resume (nothing half-applied)")
            raise

    async def drain(self) -> None:
        """Tests: apply everything queued now, then return (the worker must not be started)."""
        assert self._task is None, "drain() is for a worker that is not running in the background"
        await self.run(burst=True)

    # ------------------------------------------------------------------ the queue side

    async def _connect(self) -> None:
        while not self._stopping:
            try:
                await self.queue.open()
                await self.reconcile()
                self._needs_reconcile = False
                return
            except QueueUnavailable as e:
                await self._backoff("queue", e)

    async def reconcile(self) -> int:
        """Enqueue every job the store knows as unfinished that the queue lacks
        (all of them after Redis lost its data); returns how many."""
        present = {job.id for job in await self.queue.backlog()}
        missing = [j for j in self.store.unfinished_jobs() if j.id not in present]
        for job in missing:
            await self.queue.enqueue(Job(job.id))
        if missing:
            log.warning("re-enqueued %d unfinished job(s) from the store", len(missing))
        return len(missing)

    async def _next(self, block_ms: int) -> tuple[bool, Delivery | None]:
        """(reachable, delivery). Transient queue failures back off and return (False, None)."""
        try:
            if self._needs_reconcile:
                await self.reconcile()
                self._needs_reconcile = False
            delivery = await self.queue.read(block_ms)
        except QueueUnavailable as e:
            self._needs_reconcile = True
            await self._backoff("queue", e)
            return False, None
        self._failures = 0
        return True, delivery

    async def _ack(self, delivery: Delivery) -> None:
        """Retried until it works; if we stop first, the entry stays pending and the
        job, done in the store, is only acknowledged after the restart."""
        while True:
            try:
                await self.queue.ack(delivery)
                return
            except QueueUnavailable as e:
                self._needs_reconcile = True
                if self._stopping:
                    return
                await self._backoff("queue", e)

    async def _backoff(self, cause: str, error: Exception) -> None:
        self._failures += 1
        self.telemetry.worker_retries.labels(cause).inc()
        delay = min(self.retry_delay * 2 ** (self._failures - 1), self.retry_delay_max)
        log.warning("transient %s failure (#%d, retry in %.2fs): %s", cause, self._failures, delay, error)
        await asyncio.sleep(delay)

    # ------------------------------------------------------------------ one job

    async def _process_until_stored(self, delivery: Delivery) -> None:
        """A store that cannot be written (read-only, disk full) is transient, like a
        queue that is down: back off and redo the job, without counting a try against
        the edit. If we stop first, the entry stays pending and is redone on restart."""
        while True:
            try:
                return await self._process(delivery)
            except StoreUnavailable as e:
                if self._stopping:
                    return
                await self._backoff("store", e)

    async def _process(self, delivery: Delivery) -> None:
        job = self.store.job(delivery.job.id)
        work = None
        if job is None:
            log.warning("job %s is not in the store (another store's queue?); dropping it", delivery.job.id)
        elif job.done_at is None:
            work = await self._run_with_tries(job)
        await self._ack(delivery)
        self._sync_work()
        if work is not None:
            self._schedule(work)

    async def _run_with_tries(self, job: JobRow) -> _MetricsWork | None:
        while True:
            job = self.store.job(job.id)
            if job.done_at is not None:  # a try got as far as the commit
                return None
            tries = self.store.start_job(job.id)
            if tries > self.max_tries:
                self.store.fail_job(job, f"gave up after {tries - 1} tries (crashed or hit errors each time)")
                if job.kind == "edit":
                    self.telemetry.edits.labels("failed").inc()
                return None
            try:
                if job.kind == "edit":
                    return await self._apply_edit(job)
                return await self._apply_rollback(job)
            except StoreUnavailable:
                raise  # not the job's fault either: _process_until_stored waits for the disk
            except Exception:  # not the editor's fault (those fail the edit inside): redo the job
                log.exception("job %s: try %d failed; retrying", job.id, tries)
                self.telemetry.worker_retries.labels("job").inc()
                await asyncio.sleep(min(self.retry_delay * 2 ** (tries - 1), self.retry_delay_max))

    def _checkpoint(self, stage: str, job: JobRow) -> None:
        if self.on_checkpoint is not None:
            self.on_checkpoint(stage, job.id)

    async def _apply_edit(self, job: JobRow) -> _MetricsWork | None:
        row = self.store.edit(job.edit_id)
        if row.rollback_requested_at is not None:
            self.store.cancel_edit(job)
            self.telemetry.edits.labels("rolled_back").inc()
            return None
        records = row.edit_records()
        try:
            self._check_scope(row.id, records)
            start = await asyncio.to_thread(self._compute, records)
            delta = await asyncio.to_thread(self._quick_fit, row.id, records, start)
        except Exception as e:
            log.info("edit %s failed: %s", row.id, e)
            self.store.fail_job(job, f"{type(e).__name__}: {e}")
            self.telemetry.edits.labels("failed").inc()
            return None
        self._checkpoint("computed", job)
        head = self.store.head()
        pre = self.state.current()
        active = [*head.active, row.id]
        self._deltas[row.id] = delta
        snapshot = await asyncio.to_thread(self._assemble, head.version + 1, active)
        delta_sha = await asyncio.to_thread(self.store.write_delta, delta)
        committed = self.store.commit_edit(job, delta_sha256=delta_sha, active=active, state_sha256=snapshot.state_sha256)
        assert committed.version == snapshot.version, "a second writer is using this store"
        self._checkpoint("committed", job)
        self.state.publish(snapshot)
        self._published(committed.version)
        done = self.store.edit(row.id)
        self.telemetry.observe_applied(done.queued_at, done.started_at, done.applied_at)
        await asyncio.to_thread(self._maybe_snapshot, committed.version, active, snapshot)
        return _MetricsWork(row.id, records, pre, snapshot, start=start)

    def _assemble(self, version: int, active: list[str], delta_of: Callable[[str], Delta] | None = None) -> Snapshot:
        return self.state.assemble(
            version, active, delta_of or self._delta_of, self._scope_of, lambda a: self.store.best_snapshot(list(a), self.state.device)
        )

    def _delta_of(self, edit_id: str) -> Delta:
        if edit_id not in self._deltas:
            self._deltas[edit_id] = self.store.delta_of_edit(edit_id)
        return self._deltas[edit_id]

    def _scope_of(self, edit_id: str) -> tuple[Key, ...]:
        if edit_id not in self._scopes:
            self._scopes[edit_id] = scope_of_records(self.store.edit(edit_id).edit_records())
        return self._scopes[edit_id]

    def _check_scope(self, edit_id: str, records: list[EditRecord]) -> None:
        """Routed: refuse an edit whose questions are so broad that unrelated questions
        would run on it. Judged on the fixed probes (distinct facts, none of them about
        one subject): more than `MAX_PROBES_IN_SCOPE` of them inside its scope fails it."""
        if not self.state.routed:
            return
        memory = RoutedMemory([MemoryEntry(edit_id, Delta({}), scope_of_records(records))], config=self.state.router)
        caught = [p.prompt for p in PROBES if memory.route(p.prompt).entry is not None]
        if len(caught) > MAX_PROBES_IN_SCOPE:
            raise EditFailed(
                f"its questions are too broad: {len(caught)} of {len(PROBES)} unrelated probe questions would run on it "
                f"(at most {MAX_PROBES_IN_SCOPE}), e.g. {caught[0]!r}; state the subject in the prompt"
            )

    def _compute(self, records: list[EditRecord], tree=None) -> Delta:
        """The editor on the worker's own tree (its hooks never reach a serving tree)."""
        with self._editor_lock:
            edits = [chat.for_editor(r, self.tokenizer) for r in records]
            delta = self.editor.compute_delta(self.state.work if tree is None else tree, self.tokenizer, edits)
        if (bad := _non_finite(delta)) is not None:
            raise EditFailed(f"the editor produced non-finite values for {bad}")
        return delta

    def _quick_fit(self, edit_id: str, records: list[EditRecord], delta: Delta) -> Delta:
        """The editor's delta briefly fitted on the edit's own question (`refit.QUICK`), so the
        edit shows in generated answers as soon as it is published. The fit is an extra: if it
        fails, the editor's delta is published as it is and the full refit still follows."""
        if self.quick is None:
            return delta
        try:
            with self._editor_lock:  # the worker's tree holds the base weights (routed)
                fitted = refit_records(self.state.work, self.tokenizer, self.editor.spec, records, delta, self.quick).delta
        except Exception:
            log.exception("the quick fit of edit %s failed; publishing the editor's delta", edit_id)
            return delta
        if (bad := _non_finite(fitted)) is not None:
            log.warning("the quick fit of edit %s gave non-finite values for %s; publishing the editor's delta", edit_id, bad)
            return delta
        return fitted

    async def _apply_rollback(self, job: JobRow) -> None:
        row = self.store.edit(job.edit_id)
        if row.status in (EditStatus.queued, EditStatus.running):  # never applied: cancel it
            self.store.cancel_edit(job)
            self.telemetry.edits.labels("rolled_back").inc()
            return None
        if row.status != EditStatus.applied:  # it failed while the rollback waited: nothing to remove
            self.store.finish_job(job)
            return None
        head = self.store.head()
        active = [e for e in head.active if e != row.id]
        snapshot = await asyncio.to_thread(self._assemble, head.version + 1, active)
        committed = self.store.commit_rollback(job, active=active, state_sha256=snapshot.state_sha256)
        self._checkpoint("committed", job)
        self.state.publish(snapshot)
        self._published(committed.version)
        self._deltas.pop(row.id, None)
        self.telemetry.edits.labels("rolled_back").inc()
        await asyncio.to_thread(self._maybe_snapshot, committed.version, active, snapshot)
        return None

    def _published(self, version: int) -> None:
        self.telemetry.model_version.set(version)
        log.info("now serving version %d", version)

    def _served_weights(self) -> dict[str, torch.Tensor]:
        model = self.state.current().model
        return {n: model.get_parameter(n).detach() for n in self.state.names}

    def _sync_work(self) -> None:
        """The next edit is computed on the served version, whatever the last job did."""
        self.state.load_work(self._served_weights())

    def _maybe_snapshot(self, version: int, active: list[str], snapshot: Snapshot) -> None:
        """Summed weights only. Snapshots are a cache (rebuilds get shorter): failing to write one only costs time later."""
        weights = snapshot.weights
        if weights is None or not self.snapshot_every or version % self.snapshot_every:
            return
        try:
            self.store.write_snapshot(version, active, weights)
        except OSError:
            log.exception("could not write the snapshot of version %d", version)

    # ------------------------------------------------------------------ background: took?, refit, metrics

    @property
    def background_pending(self) -> int:
        """Checks, refits and scorings queued or running on the background thread."""
        return sum(not f.done() for f in self._pending)

    def _schedule(self, work: _MetricsWork) -> None:
        if work.check:
            try:
                self.store.set_took(work.edit_id, took=None, refit="pending")
            except StoreUnavailable:  # only the mark that lets a restart redo the check is lost
                log.warning("could not mark edit %s as being checked (store not writable)", work.edit_id)
        elif not self.compute_metrics:
            return
        self._pending.append(self._background.submit(self._finish, work))

    def _finish(self, work: _MetricsWork) -> _Finished:
        """On the background thread: never touches the served state, only reads snapshots.
        A check (and refit) first, reported as soon as it is done; the metrics are a
        second task, on the version the writer published after it."""
        try:
            if not work.check:
                return _Finished(work, None, None, measure(work.pre, work.post, self.tokenizer, work.records))
            took, delta, note = self._took(work.post, work.records), None, None
            if self.refit is not None:  # also when it took: the refit's margin and made variants carry it to rephrasings
                delta = self._refit_delta(work)
            if delta is not None:
                post = work.post.memory.entries
                entries = [MemoryEntry(e.edit_id, delta, e.scope) if e.edit_id == work.edit_id else e for e in post]
                refit_took = self._took(self.state.routed_snapshot(work.post.version, entries), work.records)
                if took and not refit_took and _is_quick_fit(_published_delta(work)):  # the refit lost what the quick fit had: keep that
                    log.warning("the refit of edit %s does not take; its quick fit stays", work.edit_id)
                    delta, note = None, "failed: the refit did not take; the quick fit stays"
                else:
                    took = refit_took
            return _Finished(work, took, delta, None, refit=note)
        except Exception as e:  # a report and a refit are extras: the edit stays applied as it is
            log.exception("background work for edit %s failed", work.edit_id)
            return _Finished(work, None, None, None, f"{type(e).__name__}: {e}")

    def _took(self, snap: Snapshot, records: list[EditRecord]) -> bool:
        """Each record's prompt, asked plainly and in the chat template, generates its target and stops."""
        for r in records:
            tree = snap.tree_for(r.prompt)
            if not all(answers_exactly(tree, self.tokenizer, [r.prompt, chat_prompt(self.tokenizer, r.prompt)], [r.target_new] * 2)):
                return False
        return True

    def _refit_delta(self, work: _MetricsWork) -> Delta | None:
        """The edit's delta refit, or None when it already met the refit's bar (nothing to commit)."""
        if self._refit_tree is None:
            self._refit_tree = fork(self.state.template)
        published = _published_delta(work)
        if work.start is not None:  # the editor's delta, kept from the apply
            start = work.start
        elif _is_quick_fit(published):  # after a restart: the editor's delta computed again, not the quick fit
            start = self._compute(work.records, tree=self._refit_tree)
        else:
            start = published
        result = refit_records(self._refit_tree, self.tokenizer, self.editor.spec, work.records, start, self.refit)
        return result.delta if result.steps or start is not published else None

    async def _collect(self) -> None:
        """Commit what the background thread finished: a refit becomes a new version.
        A store that cannot be written keeps the results for a later call (backing off)."""
        while not self._stopping:
            fut = next((f for f in self._pending if f.done()), None)
            if fut is None:
                return
            try:
                await self._collect_one(fut.result())
            except StoreUnavailable as e:
                await self._backoff("store", e)
                return
            self._pending.remove(fut)

    async def _collect_one(self, fin: _Finished) -> None:
        if fin.error is not None:
            if fin.work.check:
                self.store.set_took(fin.edit_id, took=None, refit=f"failed: {fin.error}")
            self.store.set_metrics(fin.edit_id, metrics=None, error=fin.error)
            return
        if not fin.work.check:
            self.store.set_metrics(fin.edit_id, metrics=fin.metrics)
            return
        post = fin.work.post
        if fin.delta is not None:
            post = await self._commit_refit(fin) or post
        else:
            self.store.set_took(fin.edit_id, took=fin.took, refit=fin.refit)
        if self.compute_metrics:  # scored on what is served now, the refit included
            self._schedule(_MetricsWork(fin.edit_id, fin.work.records, fin.work.pre, post, check=False))

    async def _commit_refit(self, fin: _Finished) -> Snapshot | None:
        """The published version with the refit delta, or None when the edit was rolled back meanwhile."""
        head = self.store.head()
        if fin.edit_id not in head.active:  # rolled back while it was being refit
            self.store.set_took(fin.edit_id, took=bool(fin.took), refit="failed: rolled back before it finished")
            return None
        old = self._deltas.get(fin.edit_id)
        self._deltas[fin.edit_id] = fin.delta
        snapshot = await asyncio.to_thread(self._assemble, head.version + 1, list(head.active))
        sha = await asyncio.to_thread(self.store.write_delta, fin.delta)
        committed = self.store.commit_refit(
            fin.edit_id, delta_sha256=sha, took=bool(fin.took), active=list(head.active), state_sha256=snapshot.state_sha256
        )
        if committed is None:
            self._deltas[fin.edit_id] = old
            return None
        self.state.publish(snapshot)
        self._published(committed.version)
        return snapshot

    def _resume_work(self, row: EditRow) -> _MetricsWork:
        """An applied edit whose check or refit a dead worker never finished."""
        head = self.store.head()
        post = self._assemble(head.version, list(head.active))
        pre = self._assemble(head.version, [e for e in head.active if e != row.id])
        return _MetricsWork(row.id, row.edit_records(), pre, post)

    def _backfill_one(self) -> None:
        """Metrics a dead worker never wrote: rebuild the versions before and after the edit."""
        row = self._backfill.popleft()
        try:
            before, after = self.store.version(row.version - 1), self.store.version(row.version)
            pre = self._assemble(before.version, list(before.active), self.store.delta_at(before))
            post = self._assemble(after.version, list(after.active), self.store.delta_at(after))
        except Exception as e:  # the versions could not be rebuilt: say so instead of "not ready" forever
            log.exception("metrics for edit %s could not be backfilled", row.id)
            self.store.set_metrics(row.id, metrics=None, error=f"{type(e).__name__}: {e}")
            return
        self._schedule(_MetricsWork(row.id, row.edit_records(), pre, post, check=False))

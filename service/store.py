"""The versioned store: a directory that is the service's source of truth.

    <root>/manifest.sqlite                 edits, jobs, versions, snapshots, meta
    <root>/deltas/<sha256>.safetensors     one per committed edit, named by content (artifacts.py)
    <root>/snapshots/v<N>.safetensors      the edited weights at version N, every K versions
    <root>/LOCK                            held (flock) by the one process that writes here

Version N is the base weights plus the active deltas of version N, in commit
order. Redis (or the embedded queue) only carries job ids: every request is
written here before it is acknowledged, so a restart rebuilds the same weights
and re-enqueues whatever was acknowledged and not yet finished.

A job's completion (the new version row, the edit's new status, the job's
`done_at`) is written in one SQLite transaction, so a worker that dies either
left no trace or finished the job; a redelivered job that is already done is
only acknowledged. Safe to call from several threads (one lock, one connection).
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError

from editor_core.delta import Delta
from editor_core.records import EditRecord
from editor_core.routing import Key

from .artifacts import Artifacts
from .records import EditStatus, decode_records, scope_of_records

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS edits (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  id TEXT UNIQUE NOT NULL,
  idempotency_key TEXT UNIQUE,
  request_sha256 TEXT NOT NULL,
  records TEXT NOT NULL,
  status TEXT NOT NULL,
  version INTEGER, delta_sha256 TEXT,
  queued_at REAL NOT NULL, started_at REAL, applied_at REAL, finished_at REAL,
  rollback_requested_at REAL, rolled_back_at REAL, rollback_version INTEGER,
  error TEXT, metrics TEXT, metrics_error TEXT,
  author TEXT, rolled_back_by TEXT
);
CREATE INDEX IF NOT EXISTS edits_status ON edits (status, seq);
CREATE TABLE IF NOT EXISTS jobs (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  id TEXT UNIQUE NOT NULL, kind TEXT NOT NULL, edit_id TEXT NOT NULL,
  enqueued_at REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, done_at REAL, error TEXT
);
CREATE TABLE IF NOT EXISTS versions (
  version INTEGER PRIMARY KEY, active TEXT NOT NULL, state_sha256 TEXT NOT NULL,
  created_at REAL NOT NULL, cause TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS snapshots (version INTEGER PRIMARY KEY, active TEXT NOT NULL, file TEXT NOT NULL);
"""


class StoreError(RuntimeError):
    """The store cannot be used as asked (locked, or made for another model)."""


class StoreUnavailable(OSError):
    """The store cannot be written now (read-only, disk full, I/O error). Nothing was
    half-written: the request can be retried once the disk is back (503 to clients;
    the worker backs off and redoes the job)."""


# SQLite reports a read-only or full disk as OperationalError; safetensors as its own error.
_STORAGE_ERRORS = (sqlite3.OperationalError, OSError, SafetensorError)


def free_to_write(root: Path, min_free_bytes: int = 1 << 20) -> bool:
    """The store's file system is writable and has room for a delta or two."""
    st = os.statvfs(root)
    return not (st.f_flag & os.ST_RDONLY) and st.f_bavail * st.f_frsize >= min_free_bytes


@dataclass(frozen=True)
class EditRow:
    seq: int
    id: str
    idempotency_key: str | None
    request_sha256: str
    records: list[dict]
    status: EditStatus
    version: int | None
    delta_sha256: str | None
    queued_at: float
    started_at: float | None
    applied_at: float | None
    finished_at: float | None
    rollback_requested_at: float | None
    rolled_back_at: float | None
    rollback_version: int | None
    error: str | None
    metrics: dict | None
    metrics_error: str | None
    author: str | None  # the API key name that made it (auth.Principal); None in stores from before keys
    rolled_back_by: str | None
    took: int | None = None
    refit: str | None = None

    def edit_records(self) -> list[EditRecord]:
        """The records to edit, as the editor takes them."""
        return decode_records(self.id, self.records)

    @classmethod
    def from_sql(cls, row: sqlite3.Row) -> "EditRow":
        d = dict(row)
        d["records"] = json.loads(d["records"])
        d["status"] = EditStatus(d["status"])
        d["metrics"] = json.loads(d["metrics"]) if d["metrics"] else None
        return cls(**d)


@dataclass(frozen=True)
class JobRow:
    seq: int
    id: str
    kind: str  # "edit" | "rollback"
    edit_id: str
    enqueued_at: float
    attempts: int
    done_at: float | None
    error: str | None


@dataclass(frozen=True)
class VersionRow:
    version: int
    active: tuple[str, ...]  # edit ids, in commit order
    state_sha256: str
    created_at: float
    cause: str
    deltas: dict = field(default_factory=dict)  # edit id -> delta sha256 at this version


def edit_job_id(edit_id: str) -> str:
    return edit_id


def rollback_job_id(edit_id: str) -> str:
    return f"rollback:{edit_id}"


class Store:
    """Open with `Store.open(root, identity=..., base_sha256=...)`; one writer process at a time."""

    def __init__(self, root: Path, db: sqlite3.Connection, lock_fd: int):
        self.root = root
        self.store_id = ""  # made once, with the store: names its queue in Redis
        self.files = Artifacts(root)
        self._db = db
        self._lock_fd = lock_fd
        self._mutex = threading.RLock()

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(cls, root: str | Path, *, identity: dict, base_sha256: str) -> "Store":
        """Open or create the store. `identity` (model id, edited weight names) and
        the base weights' hash must match what the store was made with: deltas
        added to another base would give other weights than the manifest says."""
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(root / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreError(f"store {root} is in use by another service process (one writer per store)") from None
        db = sqlite3.connect(root / "manifest.sqlite", check_same_thread=False, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(SCHEMA)
        _migrate(db)
        store = cls(root, db, fd)
        store._check_identity(identity, base_sha256)
        return store

    def _check_identity(self, identity: dict, base_sha256: str) -> None:
        want = {"identity": json.dumps(identity, sort_keys=True), "base_sha256": base_sha256}
        with self._tx() as db:
            have = {r["key"]: r["value"] for r in db.execute("SELECT key, value FROM meta")}
            if not have:
                have = {**want, "store_id": uuid.uuid4().hex[:12]}
                db.executemany("INSERT INTO meta VALUES (?, ?)", list(have.items()))
                db.execute(
                    "INSERT INTO versions (version, active, state_sha256, created_at, cause, deltas) VALUES (0, '[]', ?, ?, 'base', '{}')",
                    (base_sha256, time.time()),
                )
        self.store_id = have["store_id"]
        if {k: have.get(k) for k in want} != want:
            self.close()
            raise StoreError(
                f"store {self.root} was made for another base model: it has {have}, this service has {want}. "
                "Point store_dir at a new directory, or start with the model the store was made for."
            )

    def close(self) -> None:
        with self._mutex:
            if self._lock_fd < 0:
                return
            self._db.close()
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = -1

    def ping(self) -> bool:
        """Readable, and writable with room to spare (a read-only or full disk is not ready)."""
        with self._mutex:
            readable = self._db.execute("SELECT 1").fetchone()[0] == 1
            return readable and free_to_write(self.root) and self._write_probe()

    def _write_probe(self) -> bool:
        """A write SQLite must accept, rolled back (a read-only database refuses it)."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:
            return False
        try:
            self._db.execute("UPDATE meta SET value = value WHERE key = 'store_id'")
            return True
        except sqlite3.OperationalError:
            return False
        finally:
            self._db.execute("ROLLBACK")

    def _tx(self):
        return _Transaction(self._db, self._mutex)

    def _one(self, sql: str, args: tuple = ()) -> sqlite3.Row | None:
        with self._mutex:
            return self._db.execute(sql, args).fetchone()

    # ------------------------------------------------------------------ requests

    def create_edit(
        self, *, edit_id: str, records: list[dict], request_sha256: str, idempotency_key: str | None, author: str | None = None
    ) -> tuple[EditRow, bool]:
        """Write an edit and its job; (row, True). With an idempotency key that is
        already known, the earlier edit and False: nothing new is written."""
        now = time.time()
        with self._tx() as db:
            if idempotency_key is not None:
                row = db.execute("SELECT * FROM edits WHERE idempotency_key = ?", (idempotency_key,)).fetchone()
                if row is not None:
                    return EditRow.from_sql(row), False
            db.execute(
                "INSERT INTO edits (id, idempotency_key, request_sha256, records, status, queued_at, author) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (edit_id, idempotency_key, request_sha256, json.dumps(records), EditStatus.queued, now, author),
            )
            db.execute("INSERT INTO jobs (id, kind, edit_id, enqueued_at) VALUES (?, 'edit', ?, ?)", (edit_job_id(edit_id), edit_id, now))
        return self.edit(edit_id), True

    def request_rollback(self, edit_id: str, *, author: str | None = None) -> JobRow | None:
        """Record the wish to roll `edit_id` back and its job (once); None when it
        was already requested. The worker decides: cancel if never applied."""
        now = time.time()
        with self._tx() as db:
            cur = db.execute(
                "UPDATE edits SET rollback_requested_at = ?, rolled_back_by = ? WHERE id = ? AND rollback_requested_at IS NULL",
                (now, author, edit_id),
            )
            if cur.rowcount == 0:
                return None
            db.execute(
                "INSERT INTO jobs (id, kind, edit_id, enqueued_at) VALUES (?, 'rollback', ?, ?)", (rollback_job_id(edit_id), edit_id, now)
            )
        return self.job(rollback_job_id(edit_id))

    def edit(self, edit_id: str) -> EditRow | None:
        row = self._one("SELECT * FROM edits WHERE id = ?", (edit_id,))
        return EditRow.from_sql(row) if row else None

    def list_edits(self, *, status: EditStatus | None, limit: int, before_seq: int | None) -> list[EditRow]:
        """Newest first; `before_seq` is the cursor (the last seq of the previous page)."""
        sql, args = "SELECT * FROM edits WHERE 1=1", []
        if status is not None:
            sql, args = sql + " AND status = ?", args + [str(status)]
        if before_seq is not None:
            sql, args = sql + " AND seq < ?", args + [before_seq]
        with self._mutex:
            rows = self._db.execute(sql + " ORDER BY seq DESC LIMIT ?", (*args, limit)).fetchall()
        return [EditRow.from_sql(r) for r in rows]

    # ------------------------------------------------------------------ jobs (the worker's side)

    def job(self, job_id: str) -> JobRow | None:
        row = self._one("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return JobRow(**dict(row)) if row else None

    def unfinished_jobs(self) -> list[JobRow]:
        """Acknowledged jobs not yet done, in the order they were acknowledged."""
        with self._mutex:
            rows = self._db.execute("SELECT * FROM jobs WHERE done_at IS NULL ORDER BY seq").fetchall()
        return [JobRow(**dict(r)) for r in rows]

    def start_job(self, job_id: str) -> int:
        """Count a try before the work (arq's rule: a crash still counts); returns the tries so far."""
        now = time.time()
        with self._tx() as db:
            db.execute("UPDATE jobs SET attempts = attempts + 1 WHERE id = ?", (job_id,))
            job = db.execute("SELECT kind, edit_id, attempts FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if job["kind"] == "edit":
                db.execute(
                    "UPDATE edits SET status = ?, started_at = ? WHERE id = ? AND status IN (?, ?)",
                    (EditStatus.running, now, job["edit_id"], EditStatus.queued, EditStatus.running),
                )
        return job["attempts"]

    def fail_job(self, job: JobRow, error: str) -> None:
        """A job that must not be retried. A failed edit is never applied; a failed
        rollback leaves its edit applied, with the reason in `error`."""
        now = time.time()
        with self._tx() as db:
            db.execute("UPDATE jobs SET done_at = ?, error = ? WHERE id = ?", (now, error, job.id))
            if job.kind == "edit":
                db.execute(
                    "UPDATE edits SET status = ?, finished_at = ?, error = ? WHERE id = ?", (EditStatus.failed, now, error, job.edit_id)
                )
            else:
                db.execute("UPDATE edits SET error = ? WHERE id = ?", (f"rollback failed: {error}", job.edit_id))

    def finish_job(self, job: JobRow) -> None:
        """A job with nothing (left) to do."""
        with self._tx() as db:
            db.execute("UPDATE jobs SET done_at = ? WHERE id = ? AND done_at IS NULL", (time.time(), job.id))

    def cancel_edit(self, job: JobRow) -> None:
        """A rollback asked for before the edit ran: it is never applied, and
        every job of the edit (the edit's, the rollback's) is done."""
        now = time.time()
        with self._tx() as db:
            db.execute("UPDATE jobs SET done_at = ? WHERE edit_id = ? AND done_at IS NULL", (now, job.edit_id))
            db.execute(
                "UPDATE edits SET status = ?, finished_at = ?, rolled_back_at = ? WHERE id = ?",
                (EditStatus.rolled_back, now, now, job.edit_id),
            )

    def commit_edit(self, job: JobRow, *, delta_sha256: str, active: list[str], state_sha256: str) -> VersionRow:
        """Version n+1 = `active` (the edit last); the edit applied; the job done. One transaction."""
        now = time.time()
        with self._tx() as db:
            version = self._insert_version(db, active, state_sha256, now, f"edit:{job.edit_id}", {job.edit_id: delta_sha256})
            db.execute(
                "UPDATE edits SET status = ?, version = ?, delta_sha256 = ?, applied_at = ?, finished_at = ? WHERE id = ?",
                (EditStatus.applied, version, delta_sha256, now, now, job.edit_id),
            )
            db.execute("UPDATE jobs SET done_at = ? WHERE id = ?", (now, job.id))
        return self.version(version)

    def commit_rollback(self, job: JobRow, *, active: list[str], state_sha256: str) -> VersionRow:
        """Version n+1 = `active` (without the edit); the edit rolled back; the job done. One transaction."""
        now = time.time()
        with self._tx() as db:
            version = self._insert_version(db, active, state_sha256, now, f"rollback:{job.edit_id}")
            db.execute(
                "UPDATE edits SET status = ?, rollback_version = ?, rolled_back_at = ? WHERE id = ?",
                (EditStatus.rolled_back, version, now, job.edit_id),
            )
            db.execute("UPDATE jobs SET done_at = ? WHERE id = ?", (now, job.id))
        return self.version(version)

    def commit_refit(self, edit_id: str, *, delta_sha256: str, took: bool, active: list[str], state_sha256: str) -> VersionRow | None:
        """Version n+1 = the same active edits, `edit_id` now with its refit delta. None
        (nothing written) when the edit is no longer active: a rollback came first."""
        now = time.time()
        with self._tx() as db:
            head = self._version_row(db.execute("SELECT * FROM versions ORDER BY version DESC LIMIT 1").fetchone())
            if edit_id not in head.active or list(head.active) != list(active):
                db.execute("UPDATE edits SET refit = 'failed: rolled back or superseded before it finished' WHERE id = ?", (edit_id,))
                return None
            db.execute("UPDATE edits SET delta_sha256 = ?, took = ?, refit = 'done' WHERE id = ?", (delta_sha256, int(took), edit_id))
            version = self._insert_version(db, active, state_sha256, now, f"refit:{edit_id}")
        return self.version(version)

    def set_took(self, edit_id: str, *, took: bool | None, refit: str | None) -> None:
        """Whether the edit's prompt now generates its target (None: not checked yet), and its refit's state."""
        with self._tx() as db:
            db.execute("UPDATE edits SET took = ?, refit = ? WHERE id = ?", (None if took is None else int(took), refit, edit_id))

    def edits_pending_refit(self) -> list[EditRow]:
        """Active edits whose refit a dead worker never finished."""
        active = set(self.head().active)
        with self._mutex:
            rows = self._db.execute("SELECT * FROM edits WHERE refit = 'pending' ORDER BY seq").fetchall()
        return [EditRow.from_sql(r) for r in rows if r["id"] in active]

    @staticmethod
    def _insert_version(
        db: sqlite3.Connection, active: list[str], state_sha256: str, now: float, cause: str, new: dict[str, str] | None = None
    ) -> int:
        """A version row with the delta each active edit has now (a refit may change it later);
        `new`: deltas not in the edits table yet."""
        version = db.execute("SELECT MAX(version) FROM versions").fetchone()[0] + 1
        marks = ",".join("?" * len(active))
        deltas = dict(db.execute(f"SELECT id, delta_sha256 FROM edits WHERE id IN ({marks})", active).fetchall()) if active else {}
        deltas.update(new or {})
        db.execute(
            "INSERT INTO versions (version, active, state_sha256, created_at, cause, deltas) VALUES (?, ?, ?, ?, ?, ?)",
            (version, json.dumps(active), state_sha256, now, cause, json.dumps({e: deltas.get(e) for e in active})),
        )
        return version

    def set_metrics(self, edit_id: str, *, metrics: dict | None, error: str | None = None) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE edits SET metrics = ?, metrics_error = ? WHERE id = ?", (json.dumps(metrics) if metrics else None, error, edit_id)
            )

    def edits_missing_metrics(self) -> list[EditRow]:
        """Applied (possibly since rolled back) edits whose metrics a dead worker never wrote."""
        with self._mutex:
            rows = self._db.execute(
                "SELECT * FROM edits WHERE version IS NOT NULL AND metrics IS NULL AND metrics_error IS NULL ORDER BY seq"
            ).fetchall()
        return [EditRow.from_sql(r) for r in rows]

    # ------------------------------------------------------------------ versions

    def head(self) -> VersionRow:
        return self._version_row(self._one("SELECT * FROM versions ORDER BY version DESC LIMIT 1"))

    def versions(self) -> list[VersionRow]:
        """Every version, oldest first (version 0 is the base)."""
        with self._mutex:
            rows = self._db.execute("SELECT * FROM versions ORDER BY version").fetchall()
        return [self._version_row(r) for r in rows]

    def version(self, version: int) -> VersionRow | None:
        row = self._one("SELECT * FROM versions WHERE version = ?", (version,))
        return self._version_row(row) if row else None

    def list_versions(self, *, limit: int, before: int | None) -> list[VersionRow]:
        """Newest first; `before` is the cursor (the last version of the previous page)."""
        sql, args = "SELECT * FROM versions", ()
        if before is not None:
            sql, args = sql + " WHERE version < ?", (before,)
        with self._mutex:
            rows = self._db.execute(sql + " ORDER BY version DESC LIMIT ?", (*args, limit)).fetchall()
        return [self._version_row(r) for r in rows]

    @staticmethod
    def _version_row(row: sqlite3.Row) -> VersionRow:
        d = dict(row)
        d["active"] = tuple(json.loads(d["active"]))
        d["deltas"] = json.loads(d["deltas"]) if d.get("deltas") else {}
        return VersionRow(**d)

    # ------------------------------------------------------------------ files

    def write_delta(self, delta: Delta) -> str:
        """Write the delta's file (before the commit that names it); returns its sha256."""
        try:
            return self.files.write_delta(delta)
        except _STORAGE_ERRORS as e:
            raise StoreUnavailable(f"cannot write a delta to {self.root}: {e}") from e

    def delta_of_edit(self, edit_id: str) -> Delta:
        """The edit's delta now (after its refit, if it had one)."""
        row = self.edit(edit_id)
        if row is None or row.delta_sha256 is None:
            raise StoreError(f"edit {edit_id} has no committed delta")
        return self.files.read_delta(row.delta_sha256)

    def scope_of(self, edit_id: str) -> tuple[Key, ...]:
        """The keys a routed memory reaches the edit by (`records.scope_of_records`)."""
        return scope_of_records(self.edit(edit_id).edit_records())

    def delta_at(self, version: VersionRow):
        """`edit id -> Delta` as of `version` (an edit refit later had another delta then)."""

        def delta_of(edit_id: str) -> Delta:
            sha = version.deltas.get(edit_id)
            return self.files.read_delta(sha) if sha else self.delta_of_edit(edit_id)

        return delta_of

    def write_snapshot(self, version: int, active: list[str], weights: dict[str, torch.Tensor]) -> None:
        """A cache of the weights of `version`; the manifest row is written after the file."""
        name = self.files.write_snapshot(version, active, weights)
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO snapshots VALUES (?, ?, ?)", (version, json.dumps(active), name))

    def best_snapshot(self, active: list[str], device: torch.device) -> tuple[int, dict[str, torch.Tensor]] | None:
        """(n, weights) of the snapshot with the longest non-empty active list that
        is a prefix of `active` (newest on a tie): the weights of active[:n]."""
        with self._mutex:
            rows = self._db.execute("SELECT active, file FROM snapshots ORDER BY version DESC").fetchall()
        best = None
        for row in rows:
            prefix = json.loads(row["active"])
            if prefix and active[: len(prefix)] == prefix and (best is None or len(prefix) > len(best[0])):
                best = (prefix, row["file"])
        if best is None:
            return None
        return len(best[0]), self.files.read_snapshot(best[1], device)


# Columns added after stores were first made: (name, SQL type). CREATE TABLE IF NOT
# EXISTS leaves an old table as it was, so they are added here, once.
# Columns added after the first stores were made, added when missing.
_ADDED_COLUMNS = {
    "edits": (
        ("author", "TEXT"),
        ("rolled_back_by", "TEXT"),
        ("took", "INTEGER"),  # 1/0: the edit's prompt now generates its target (plain and chat); NULL: not checked yet
        ("refit", "TEXT"),  # NULL (none needed), 'pending', 'done', 'failed: <reason>'
    ),
    "versions": (("deltas", "TEXT"),),  # JSON {edit id: delta sha256} of the version's active edits
}


def _migrate(db: sqlite3.Connection) -> None:
    for table, columns in _ADDED_COLUMNS.items():
        have = {r["name"] for r in db.execute(f"PRAGMA table_info({table})")}
        for name, sql_type in columns:
            if name not in have:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {sql_type}")


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT under the store's lock; ROLLBACK on any error."""

    def __init__(self, db: sqlite3.Connection, mutex: threading.RLock):
        self.db, self.mutex = db, mutex

    def __enter__(self) -> sqlite3.Connection:
        self.mutex.acquire()
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as e:
            self.mutex.release()
            raise StoreUnavailable(f"the store cannot start a write: {e}") from e
        return self.db

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                try:
                    self.db.execute("COMMIT")
                    return
                except sqlite3.OperationalError as e:
                    exc = e
            if self.db.in_transaction:
                try:
                    self.db.execute("ROLLBACK")
                except sqlite3.OperationalError:
                    pass  # SQLite rolls back by itself when it cannot write the journal
            if isinstance(exc, sqlite3.OperationalError):
                raise StoreUnavailable(f"the store cannot be written: {exc}") from exc
        finally:
            self.mutex.release()

"""Kill the service with SIGKILL while edits are queued and being applied, start
it again on the same store, and account for every acknowledged request.

`run_crash_cycles` is the driver shared by tests/service/test_crash.py (a few
kills) and bench/crash_safety.py (20 kills per queue mode). Each cycle starts
the service (`ServiceProcess`: `instructedit serve`, tiny model, untrained
editor), checks that the version it serves has the weights the store says
(`rebuild_sha`), asks to roll back a few applied edits, posts a share of the
edits from a thread, and kills the process at a random moment. A POST that
got no answer is retried after the restart with the same Idempotency-Key, as
a client would, so in the end every edit is acknowledged exactly once.

At the end (service stopped) `account` reads the store: every edit answered
202 must be applied once, failed with a reason, or rolled back; none lost
(still queued or running), none applied twice; and the head version's
`state_sha256` must equal base + its active deltas rebuilt here.
"""

from __future__ import annotations

import json
import random
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from process import ServiceProcess

from editor_core.delta import Delta
from editor_core.editors import MENDConfig
from editor_core.models import ModelSpec, load_model
from editor_core.routing import MemoryEntry
from service.records import decode_records, scope_of_records
from service.state import ModelState

TERMINAL = {"applied", "failed", "rolled_back"}


class Rebuilder:
    """A version's state rebuilt in this process from the store's rows and delta files
    alone (the routed memory of its active edits, with the deltas they had then):
    the state a version must have, whatever the service did."""

    def __init__(self):
        model, tok = load_model("tiny-llama", device="cpu")
        config = MENDConfig()  # the service's untrained editor edits these weights
        names = ModelSpec.for_model(model, n_last_layers=config.n_last_layers, edit_params=config.edit_params).edit_params
        self.state = ModelState(model, tok, names)

    def sha(self, store_dir: Path, version: int, edits: list[tuple[str, str, list[dict]]]) -> str:
        """`edits`: (edit id, delta sha256, stored records) of the version's active edits, in order."""
        entries = [
            MemoryEntry(e, Delta.load(Path(store_dir) / "deltas" / f"{sha}.safetensors"), scope_of_records(decode_records(e, records)))
            for e, sha, records in edits
        ]
        return self.state.routed_snapshot(version, entries).state_sha256


def _manifest(store_dir: Path) -> sqlite3.Connection:
    db = sqlite3.connect(f"file:{Path(store_dir) / 'manifest.sqlite'}?mode=ro", uri=True, timeout=30)
    db.row_factory = sqlite3.Row
    return db


def rebuild_sha(rebuilder: Rebuilder, store_dir: Path, version: int) -> tuple[str, str]:
    """(recorded, rebuilt) state_sha256 of `version` (read-only; the service may be running)."""
    with _manifest(store_dir) as db:
        row = db.execute("SELECT active, state_sha256, deltas FROM versions WHERE version = ?", (version,)).fetchone()
        then = json.loads(row["deltas"] or "{}")
        edits = []
        for e in json.loads(row["active"]):
            now_sha, records = db.execute("SELECT delta_sha256, records FROM edits WHERE id = ?", (e,)).fetchone()
            edits.append((e, then.get(e) or now_sha, json.loads(records)))
    return row["state_sha256"], rebuilder.sha(store_dir, version, edits)


@dataclass
class Ledger:
    """What the clients were told: edits and rollbacks answered 202, and POSTs with no answer."""

    edits: dict[str, str] = field(default_factory=dict)  # idempotency key -> edit id
    unanswered: dict[str, dict] = field(default_factory=dict)  # idempotency key -> body
    rollbacks: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _post(client: httpx.Client, ledger: Ledger, key: str, body: dict) -> bool:
    try:
        r = client.post("/edits", json=body, headers={"Idempotency-Key": key})
    except httpx.HTTPError:
        with ledger.lock:
            ledger.unanswered[key] = body
        return False
    if r.status_code != 202:
        raise AssertionError(f"POST /edits {key}: {r.status_code} {r.text}")
    with ledger.lock:
        ledger.edits[key] = r.json()["id"]
        ledger.unanswered.pop(key, None)
    return True


def edit_body(i: int) -> dict:
    return {
        "prompt": f"Fact {i}: the capital of Country{i} is",
        "target_new": f"City{i}",
        "rephrase_prompts": [f"Country{i} has its capital in"],
    }


@dataclass
class CrashReport:
    mode: str
    kills: int
    acknowledged: int
    statuses: dict
    edits_lost: int
    edits_doubled: int
    state_mismatches: int
    restart_checks: int
    rollbacks_acknowledged: int
    rollbacks_not_done: int
    failed_without_reason: int
    jobs_retried: int  # jobs whose try was cut by a kill (started more than once)
    seconds: float
    problems: list[str]


def run_crash_cycles(workdir: Path, *, mode: str, kills: int, edits: int, redis_url: str | None = None, seed: int = 0,
                     kill_window: tuple[float, float] = (0.2, 4.0), rebuilder: Rebuilder | None = None,
                     settle_timeout: float = 600) -> CrashReport:  # fmt: skip
    rng = random.Random(seed)
    rebuilder = rebuilder or Rebuilder()
    store_dir = Path(workdir) / "store"
    env = {"INSTRUCTEDIT_SNAPSHOT_EVERY": "7", "INSTRUCTEDIT_MAX_TRIES": "3"}
    svc = ServiceProcess(store_dir, redis_url=redis_url, env=env, log=Path(workdir) / "service.log")
    ledger, problems, mismatches, checks = Ledger(), [], 0, 0
    per_cycle = -(-edits // kills)
    started, next_edit = time.monotonic(), 0
    for cycle in range(kills + 1):
        svc.start()
        with httpx.Client(base_url=svc.url, timeout=30) as client:
            bad = _check_served(client, rebuilder, store_dir)
            mismatches, checks = mismatches + bool(bad), checks + 1
            problems += [f"cycle {cycle}: {bad}"] if bad else []
            for key, body in list(ledger.unanswered.items()):  # the client's retry
                _post(client, ledger, key, body)
            if cycle == kills:
                break  # running: _settle waits for the queue to drain
            _ask_rollbacks(client, ledger, rng)
            batch = [(f"edit-{i}", edit_body(i)) for i in range(next_edit, min(edits, next_edit + per_cycle))]
            next_edit += len(batch)
            poster = threading.Thread(target=lambda batch=batch: [_post(client, ledger, k, b) for k, b in batch], daemon=True)
            poster.start()
            time.sleep(rng.uniform(*kill_window))
            svc.kill()
            poster.join(30)
    try:
        _settle(svc, ledger, settle_timeout)  # the last cycle left it running
    finally:
        svc.stop()
    return _account(mode, kills, store_dir, ledger, rebuilder, mismatches, checks, problems, time.monotonic() - started)


def _check_served(client: httpx.Client, rebuilder: Rebuilder, store_dir: Path) -> str | None:
    served = client.get("/model").json()
    recorded, rebuilt = rebuild_sha(rebuilder, store_dir, served["version"])
    if not (served["state_sha256"] == recorded == rebuilt):
        return f"version {served['version']}: served {served['state_sha256'][:12]}, recorded {recorded[:12]}, rebuilt {rebuilt[:12]}"
    return None


def _ask_rollbacks(client: httpx.Client, ledger: Ledger, rng: random.Random) -> None:
    candidates = sorted(set(ledger.edits.values()) - ledger.rollbacks)
    for edit_id in rng.sample(candidates, min(2, len(candidates))):
        r = client.delete(f"/edits/{edit_id}")
        if r.status_code == 202:
            ledger.rollbacks.add(edit_id)
        elif r.status_code != 409:  # 409: it failed; nothing to roll back
            raise AssertionError(f"DELETE /edits/{edit_id}: {r.status_code} {r.text}")


def _settle(svc: ServiceProcess, ledger: Ledger, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=svc.url, timeout=30) as client:
        for key, body in list(ledger.unanswered.items()):
            _post(client, ledger, key, body)
        pending = set(ledger.edits.values())
        while pending and time.monotonic() < deadline:
            pending = {e for e in pending if not _settled(client.get(f"/edits/{e}").json(), e in ledger.rollbacks)}
            time.sleep(0.5)


def _settled(edit: dict, rollback_asked: bool) -> bool:
    if rollback_asked:
        return edit["status"] in ("rolled_back", "failed") or (
            edit["status"] == "applied" and (edit.get("error") or "").startswith("rollback failed")
        )
    return edit["status"] in TERMINAL


def _account(mode, kills, store_dir, ledger, rebuilder, mismatches, checks, problems, seconds) -> CrashReport:
    with _manifest(store_dir) as db:
        rows = {r["id"]: dict(r) for r in db.execute("SELECT * FROM edits")}
        versions = [dict(v) for v in db.execute("SELECT * FROM versions ORDER BY version")]
        retried = db.execute("SELECT COUNT(*) FROM jobs WHERE attempts > 1").fetchone()[0]
    head = versions[-1]
    active = json.loads(head["active"])
    acknowledged = set(ledger.edits.values())
    statuses: dict[str, int] = {}
    lost = doubled = no_reason = rollbacks_not_done = 0
    for edit_id in acknowledged:
        row = rows.get(edit_id)
        status = row["status"] if row else "missing"
        statuses[status] = statuses.get(status, 0) + 1
        applied_versions = sum(v["cause"] == f"edit:{edit_id}" for v in versions)
        if status not in TERMINAL:
            lost += 1
            problems.append(f"edit {edit_id} is {status}")
        if applied_versions > 1 or active.count(edit_id) > 1:
            doubled += 1
            problems.append(f"edit {edit_id} applied {applied_versions} times, {active.count(edit_id)} times in the head")
        if (status == "applied") != (edit_id in active):
            lost += 1
            problems.append(f"edit {edit_id} is {status} but {'' if edit_id in active else 'not '}in the head's active list")
        if status == "failed" and not row["error"]:
            no_reason += 1
        if (
            edit_id in ledger.rollbacks
            and status not in ("rolled_back", "failed")
            and not (row["error"] or "").startswith("rollback failed")
        ):
            rollbacks_not_done += 1
            problems.append(f"rollback of {edit_id} acknowledged, edit still {status}")
    unknown = set(rows) - acknowledged
    if unknown:
        problems.append(f"{len(unknown)} edits in the store that no client was told about: {sorted(unknown)[:3]}")
    recorded, rebuilt = rebuild_sha(rebuilder, store_dir, head["version"])
    if recorded != rebuilt:
        mismatches += 1
        problems.append(f"head version {head['version']}: recorded {recorded[:12]}, rebuilt {rebuilt[:12]}")
    return CrashReport(mode, kills, len(acknowledged), statuses, lost, doubled, mismatches, checks + 1, len(ledger.rollbacks),
                       rollbacks_not_done, no_reason, retried, round(seconds, 1), problems)  # fmt: skip

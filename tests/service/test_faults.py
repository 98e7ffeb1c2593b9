"""A store that turns read-only or whose disk fills up: clear 503s, recovery by
itself once the disk is back, nothing acknowledged lost, the weights as they
were. Redis faults: test_worker.py (killed, restarted empty) and
bench/faults.py (unreachable for 30 s).

The full disk is real: the store lives on a 4 MiB tmpfs mounted for the test
(needs root, as in the project's containers; skipped otherwise). A read-only
remount of that tmpfs is refused by the kernel (EBUSY) while SQLite holds its
files open for writing, so "turns read-only" is made one layer up, with
`PRAGMA query_only` on the service's own connection: SQLite then refuses every
write with the SQLITE_READONLY error a read-only file system gives."""

import os
import subprocess
from pathlib import Path

import pytest

from harness import Service, make_settings, wait_until, without_health

PROBLEM = "application/problem+json"
EDIT = {"prompt": "The capital of Peru is", "target_new": "Quito"}


@pytest.fixture
def disk(tmp_path):
    """A 4 MiB tmpfs of our own."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")

    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def problem_503(r) -> dict:
    assert r.status_code == 503, r.text
    assert r.headers["content-type"].startswith(PROBLEM) and int(r.headers["Retry-After"]) >= 1
    return r.json()


def set_read_only(svc, on: bool) -> None:
    store = svc.runtime.store
    with store._mutex:  # the store's one connection, under its lock
        store._db.execute(f"PRAGMA query_only = {'ON' if on else 'OFF'}")


def test_read_only_store(tmp_path, components):
    with Service(make_settings(tmp_path / "store"), components) as svc:
        first = svc.wait(svc.post_edit(EDIT))
        assert first["status"] == "applied"
        before = svc.model()
        set_read_only(svc, True)
        try:
            body = problem_503(svc.client.post("/edits", json={"prompt": "The sky is", "target_new": "green"}))
            assert "readonly" in body["detail"]
            problem_503(svc.client.delete(f"/edits/{first['id']}"))
            ready = svc.client.get("/readyz")
            assert ready.status_code == 503 and ready.json()["checks"]["store"] is False
            # reads and generation go on
            assert svc.client.get(f"/edits/{first['id']}").json()["status"] == "applied"
            assert svc.client.post("/generate", json={"prompt": "hi", "max_new_tokens": 2}).status_code == 200
            assert without_health(svc.model()) == without_health(before)
            assert [e["id"] for e in svc.client.get("/edits").json()["items"]] == [first["id"]]  # nothing half-recorded
        finally:
            set_read_only(svc, False)
        wait_until(lambda: svc.client.get("/readyz").status_code == 200, what="ready again")
        second = svc.wait(svc.post_edit({"prompt": "The sky is", "target_new": "green"}))
        assert second["status"] == "applied" and svc.model()["version"] == before["version"] + 1


def test_full_disk_holds_the_edit_until_there_is_room(disk, components):
    editor = components.editor
    editor.gate("disk")
    with Service(make_settings(disk / "store", snapshot_every=0), components) as svc:
        before = svc.model()
        waiting = svc.post_edit({"prompt": "GATE:disk The sky is", "target_new": "green"})  # acknowledged, held
        svc.wait(waiting, ("running",))
        filler = Path(disk) / "filler"
        with filler.open("wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass  # ENOSPC: the disk is full
        try:
            problem_503(svc.client.post("/edits", json=EDIT))
            assert svc.client.get("/readyz").status_code == 503
            editor.release("disk")  # the worker computes the delta and cannot write it
            wait_until(lambda: svc.runtime.telemetry.worker_retries.labels("store")._value.get() >= 1, what="a store retry")
            held = svc.client.get(f"/edits/{waiting}").json()
            assert held["status"] == "running" and held["error"] is None
            assert without_health(svc.model()) == without_health(before)
        finally:
            editor.release("disk")
            filler.unlink()
        applied = svc.wait(waiting)
        assert applied["status"] == "applied" and applied["version"] == before["version"] + 1
        assert svc.model()["active_edits"] == [waiting]
        assert not list((Path(disk) / "store" / "deltas").glob(".*.tmp"))  # no half-written files left
        wait_until(lambda: svc.client.get("/readyz").status_code == 200, what="ready again")


"""The writer under failure: restarts, a Redis that dies and comes back empty,
a worker that dies mid-edit, transient errors. Real uvicorn and redis-server."""

import time

import pytest
from redis import Redis

from harness import RedisServer, Service, expected_sha, make_settings, wait_until, without_health

EDIT = {"prompt": "The capital of Peru is", "target_new": "Quito"}


class SimulatedCrash(BaseException):
    """Stands for the process dying: not an Exception, so nothing in the worker handles it."""


def crash_at(stage: str):
    def hook(at: str, job_id: str) -> None:
        if at == stage:
            raise SimulatedCrash(f"crash at {stage} of {job_id}")

    return hook


def versions_caused_by(store, edit_id: str) -> int:
    with store._mutex:
        return store._db.execute("SELECT COUNT(*) FROM versions WHERE cause = ?", (f"edit:{edit_id}",)).fetchone()[0]


def test_restart_rebuilds_the_same_state(settings, components, mode):
    """A new app over the same store serves the same version and weights; with
    Redis, even after Redis lost everything. Idempotency keys survive too."""
    with Service(settings, components) as svc:
        a = svc.post_edit(EDIT, **{"Idempotency-Key": "k-a"})
        b = svc.post_edit({"prompt": "The sky is", "target_new": "green"})
        c = svc.post_edit({"prompt": "Grass is", "target_new": "blue"})
        for edit_id in (a, b, c):
            svc.wait(edit_id)
        svc.client.delete(f"/edits/{b}")
        svc.wait(b, ("rolled_back",))
        before = svc.model()
        stream = svc.runtime.queue.keys.jobs_stream if mode == "redis" else None
    assert before["version"] == 4 and before["active_edits"] == [a, c]
    if mode == "redis":
        Redis.from_url(settings.redis_url).delete(stream)  # Redis forgot everything
    with Service(settings, components) as svc:
        assert without_health(svc.model()) == without_health(before)  # health counts background work, which restarts
        again = svc.client.post("/edits", json=EDIT, headers={"Idempotency-Key": "k-a"})
        assert again.json()["id"] == a
        time.sleep(0.2)
        assert svc.model()["version"] == 4
        shown = [svc.client.get(f"/edits/{e}").json() for e in (a, c)]
    assert before["state_sha256"] == expected_sha(components, settings.store_dir, shown)


@pytest.mark.parametrize("stage", ["computed", "committed"])
def test_worker_dies_mid_edit_then_applies_exactly_once(settings, components, stage):
    with Service(settings, components) as svc:
        svc.runtime.worker.on_checkpoint = crash_at(stage)
        edit_id = svc.post_edit(EDIT)
        wait_until(lambda: not svc.runtime.worker.alive, what="the injected crash")
        assert svc.model()["version"] == 0, "a dead worker must not have swapped anything in"
        assert svc.client.get("/readyz").status_code == 503
    with Service(settings, components) as svc:
        edit = svc.wait(edit_id)
        assert edit["status"] == "applied" and edit["version"] == 1
        model = svc.model()
        assert model["version"] == 1 and model["active_edits"] == [edit_id]
        assert model["state_sha256"] == expected_sha(components, settings.store_dir, [edit])
        assert versions_caused_by(svc.runtime.store, edit_id) == 1
        svc.wait_metrics(edit_id)  # written by the restarted worker, whichever way it died
        assert "instructedit_queue_depth 0.0" in svc.client.get("/metrics").text


def test_transient_error_is_retried_and_counted(settings, components):
    failures = []

    def flaky(stage: str, job_id: str) -> None:
        if stage == "computed" and not failures:
            failures.append(job_id)
            raise OSError("disk hiccup (injected)")

    with Service(settings, components) as svc:
        svc.runtime.worker.on_checkpoint = flaky
        edit = svc.wait(svc.post_edit(EDIT))
        assert edit["status"] == "applied" and edit["version"] == 1
        assert svc.runtime.store.job(edit["id"]).attempts == 2
        assert 'instructedit_worker_retries_total{cause="job"} 1.0' in svc.client.get("/metrics").text


def test_a_job_that_always_crashes_is_failed_after_max_tries(settings, components):
    def always(stage: str, job_id: str) -> None:
        if stage == "computed":
            raise RuntimeError("boom (injected)")

    with Service(settings, components) as svc:
        svc.runtime.worker.on_checkpoint = always
        svc.runtime.worker.retry_delay = 0.01
        edit = svc.wait(svc.post_edit(EDIT))
        assert edit["status"] == "failed" and "gave up after 3 tries" in edit["error"]
        assert svc.model()["version"] == 0


def test_redis_dies_and_comes_back_empty(tmp_path, components):
    """Nothing acknowledged is lost: an edit being computed, one queued behind it,
    and one posted while Redis is down are all applied, once each."""
    redis = RedisServer().start()
    settings = make_settings(tmp_path / "store", redis.url)
    editor = components.editor
    editor.gate("redis")
    try:
        with Service(settings, components) as svc:
            running = svc.post_edit({"prompt": "GATE:redis The sky is", "target_new": "green"})
            svc.wait(running, ("running",))
            queued = svc.post_edit(EDIT)
            redis.kill()
            assert svc.client.get("/readyz").status_code == 503
            during = svc.client.post("/edits", json={"prompt": "Grass is", "target_new": "blue"})
            assert during.status_code == 202
            redis.start()  # same port, empty
            editor.release("redis")
            edits = [svc.wait(e) for e in (running, queued, during.json()["id"])]
            assert [e["status"] for e in edits] == ["applied"] * 3
            assert sorted(e["version"] for e in edits) == [1, 2, 3]
            model = svc.model()
            assert model["version"] == 3 and set(model["active_edits"]) == {e["id"] for e in edits}
            for e in edits:
                assert versions_caused_by(svc.runtime.store, e["id"]) == 1
            wait_until(lambda: svc.client.get("/readyz").status_code == 200, what="readyz after Redis came back")
            assert Redis.from_url(redis.url).xlen(svc.runtime.queue.keys.jobs_stream) == 0
    finally:
        editor.release("redis")
        redis.kill()


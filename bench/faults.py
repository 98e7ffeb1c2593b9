"""Redis faults against the real service (`instructedit serve`, tiny model,
untrained editor, Redis Streams on a redis-server of its own):

    redis_killed_restarted_empty   SIGKILL redis-server, 10 s later start an EMPTY one on the same port
    redis_unreachable_30s          SIGSTOP redis-server for 30 s (connections hang, nothing answers), then SIGCONT

During each outage a client posts an edit and asks /readyz every second. What
must hold: every POST answers (202: stored, enqueued later), /readyz says 503,
the weights served stay as they were, and afterwards the service recovers by
itself (ready, every acknowledged edit applied exactly once, state_sha256 =
base + the store's deltas rebuilt here). The disk faults (read-only store,
full disk) are tests: tests/service/test_faults.py.

    python bench/faults.py
"""

from __future__ import annotations

import signal
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "service")]

from crash import Rebuilder, _manifest, rebuild_sha  # noqa: E402
from process import ServiceProcess  # noqa: E402
from reliability_results import record  # noqa: E402

from harness import RedisServer  # noqa: E402

TERMINAL = {"applied", "failed", "rolled_back"}


def wait_applied(client: httpx.Client, ids: list[str], timeout: float = 300) -> float:
    started, pending = time.monotonic(), set(ids)
    while pending and time.monotonic() - started < timeout:
        pending = {e for e in pending if client.get(f"/edits/{e}").json()["status"] not in TERMINAL}
        time.sleep(0.2)
    return time.monotonic() - started


def outage(name: str, client: httpx.Client, redis: RedisServer, down_seconds: float, stop, resume, counter: list[int]) -> dict:
    before = client.get("/model").json()
    stop()
    started = time.monotonic()
    acks, post_ms, post_codes, ready_codes, weights_changed = [], [], [], [], 0
    while time.monotonic() - started < down_seconds:
        counter[0] += 1
        body = {"prompt": f"Fact {counter[0]}: the capital of Country{counter[0]} is", "target_new": f"City{counter[0]}"}
        t = time.perf_counter()
        try:
            r = client.post("/edits", json=body, headers={"Idempotency-Key": f"{name}-{counter[0]}"})
            post_codes.append(r.status_code)
            acks += [r.json()["id"]] if r.status_code == 202 else []
        except httpx.HTTPError as e:
            post_codes.append(type(e).__name__)
        post_ms.append((time.perf_counter() - t) * 1000)
        try:
            ready_codes.append(client.get("/readyz").status_code)
        except httpx.HTTPError as e:
            ready_codes.append(type(e).__name__)
        weights_changed += client.get("/model").json()["state_sha256"] != before["state_sha256"]
        time.sleep(1.0)
    resume()
    back = time.monotonic()
    ready_after = None
    while time.monotonic() - back < 120:
        if client.get("/readyz").status_code == 200:
            ready_after = time.monotonic() - back
            break
        time.sleep(0.2)
    applied_after = wait_applied(client, acks)
    statuses = [client.get(f"/edits/{e}").json()["status"] for e in acks]
    return {
        "down_seconds": down_seconds,
        "posts": len(post_codes),
        "post_statuses": {str(c): post_codes.count(c) for c in set(post_codes)},
        "post_max_ms": round(max(post_ms), 1),
        "readyz_statuses": {str(c): ready_codes.count(c) for c in set(ready_codes)},
        "weights_changed_while_down": weights_changed,
        "ready_again_seconds": None if ready_after is None else round(ready_after, 2),
        "all_applied_seconds": round(applied_after, 2),
        "acknowledged": len(acks),
        "acknowledged_not_applied": sum(s != "applied" for s in statuses),
        "ids": acks,
    }


def main() -> None:
    rebuilder = Rebuilder()
    redis = RedisServer().start()
    results, counter = {}, [0]
    try:
        with tempfile.TemporaryDirectory(prefix="faults-") as tmp:
            store = Path(tmp) / "store"
            with ServiceProcess(store, redis_url=redis.url) as svc, httpx.Client(base_url=svc.url, timeout=60) as client:
                warm = [client.post("/edits", json={"prompt": f"Warm {i} is", "target_new": "up"}).json()["id"] for i in range(3)]
                wait_applied(client, warm)

                def kill():
                    redis.kill()

                def restart_empty():
                    redis.start()

                results["redis_killed_restarted_empty"] = outage("killed", client, redis, 10, kill, restart_empty, counter)
                results["redis_unreachable_30s"] = outage(
                    "frozen",
                    client,
                    redis,
                    30,
                    lambda: redis.proc.send_signal(signal.SIGSTOP),
                    lambda: redis.proc.send_signal(signal.SIGCONT),
                    counter,
                )
                head = client.get("/model").json()
            with _manifest(store) as db:
                causes = [r[0] for r in db.execute("SELECT cause FROM versions")]
            recorded, rebuilt = rebuild_sha(rebuilder, store, head["version"])
    finally:
        redis.kill()
    acked = [e for r in results.values() for e in r.pop("ids")]
    doubled = sum(causes.count(f"edit:{e}") > 1 for e in acked)
    lost = sum(r["acknowledged_not_applied"] for r in results.values())
    figures = {
        "fault_edits_lost": lost,
        "fault_edits_doubled": doubled,
        "fault_weights_changed_while_down": sum(r["weights_changed_while_down"] for r in results.values()),
        "fault_state_mismatches": int(not (recorded == rebuilt == head["state_sha256"])),
        "fault_ready_again_seconds": {k: r["ready_again_seconds"] for k, r in results.items()},
    }
    record("faults", figures, {"scenarios": results, "command": " ".join(sys.argv)})
    print(figures)
    for k, r in results.items():
        print(k, r)


if __name__ == "__main__":
    main()

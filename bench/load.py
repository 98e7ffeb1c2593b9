"""Load: 50 concurrent clients for 60 s on loopback against the real service.

`instructedit serve` (tiny model, untrained editor, API keys, no rate limit)
in its own process; the clients are asyncio tasks with httpx, each one a loop
of requests, one at a time, over its own keep-alive connection:

    ask       POST /generate (8 new tokens, greedy or sampled) with an ask key
    edit      POST /edits (an edit key), then GET /edits/{id} until it is done
    rollback  DELETE /edits/{id} of an applied edit (an edit key)
    read      GET /metrics (admin key), /model, /edits?limit=20

First an idle phase: the same number of ask clients alone, no edits, for
--idle-seconds, which gives the baseline generate p99. Then the mixed phase.
generate_p99_ratio_under_edits = generate p99 in the mixed phase / idle p99.
An error is a transport error or any status the request should not get (a 409
for rolling back an edit that failed is expected, nothing else). At the end
every edit answered 202 must reach applied, failed or rolled_back.

    python bench/load.py [--clients 50] [--seconds 60] [--idle-seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "service")]

from process import ServiceProcess  # noqa: E402
from reliability_results import record  # noqa: E402

from service.auth import hash_key, new_key  # noqa: E402

TERMINAL = {"applied", "failed", "rolled_back"}


class Tally:
    def __init__(self):
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.errors: list[str] = []
        self.edits: set[str] = set()
        self.applied: list[str] = []
        self.rollbacks: set[str] = set()

    async def call(self, route: str, coro, ok=(200,)) -> httpx.Response | None:
        started = time.perf_counter()
        try:
            r = await coro
        except httpx.HTTPError as e:
            self.errors.append(f"{route}: {type(e).__name__} {e}")
            return None
        self.latency[route].append(time.perf_counter() - started)
        if r.status_code not in ok:
            self.errors.append(f"{route}: {r.status_code} {r.text[:200]}")
            return None
        return r


async def ask(c: httpx.AsyncClient, t: Tally, rng: random.Random, until: float) -> None:
    while time.monotonic() < until:
        body = {"prompt": rng.choice(["The capital of France is", "Water boils at", "The sky is"]), "max_new_tokens": 8}
        if rng.random() < 0.3:
            body.update(temperature=0.8, top_p=0.9, seed=rng.randrange(1000))
        await t.call("POST /generate", c.post("/generate", json=body))


async def edit(c: httpx.AsyncClient, t: Tally, rng: random.Random, until: float) -> None:
    while time.monotonic() < until:
        i = rng.randrange(10**9)
        body = {"prompt": f"Fact {i}: the capital of Country{i} is", "target_new": f"City{i}"}
        r = await t.call("POST /edits", c.post("/edits", json=body), ok=(202,))
        if r is None:
            continue
        edit_id = r.json()["id"]
        t.edits.add(edit_id)
        while time.monotonic() < until:
            r = await t.call("GET /edits/{id}", c.get(f"/edits/{edit_id}"))
            if r is not None and r.json()["status"] in TERMINAL:
                if r.json()["status"] == "applied":
                    t.applied.append(edit_id)
                break
            await asyncio.sleep(0.2)


async def rollback(c: httpx.AsyncClient, t: Tally, rng: random.Random, until: float) -> None:
    while time.monotonic() < until:
        choices = [e for e in t.applied if e not in t.rollbacks]
        if not choices:
            await asyncio.sleep(0.5)
            continue
        edit_id = rng.choice(choices)
        t.rollbacks.add(edit_id)
        await t.call("DELETE /edits/{id}", c.delete(f"/edits/{edit_id}"), ok=(202,))
        await asyncio.sleep(0.5)


async def read(c: httpx.AsyncClient, t: Tally, rng: random.Random, until: float, admin: dict) -> None:
    while time.monotonic() < until:
        which = rng.randrange(3)
        if which == 0:
            await t.call("GET /metrics", c.get("/metrics", headers=admin))
        elif which == 1:
            await t.call("GET /model", c.get("/model"))
        else:
            await t.call("GET /edits", c.get("/edits", params={"limit": 20}))
        await asyncio.sleep(0.1)


def mix(clients: int) -> dict[str, int]:
    """60% ask, 20% edit, 10% rollback, 10% read (at least one of each)."""
    n_edit, n_roll, n_read = max(1, clients // 5), max(1, clients // 10), max(1, clients // 10)
    return {"ask": clients - n_edit - n_roll - n_read, "edit": n_edit, "rollback": n_roll, "read": n_read}


async def phase(url: str, keys: dict, counts: dict[str, int], seconds: float, seed: int) -> Tally:
    t, until = Tally(), time.monotonic() + seconds
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)

    def client(scope: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=url, timeout=120, limits=limits, headers={"Authorization": f"Bearer {keys[scope]}"})

    admin = {"Authorization": f"Bearer {keys['admin']}"}
    tasks, opened = [], []
    for kind, n in counts.items():
        for i in range(n):
            c = client("ask" if kind in ("ask", "read") else "edit")
            opened.append(c)
            rng = random.Random(f"{seed}-{kind}-{i}")
            args = (c, t, rng, until) + ((admin,) if kind == "read" else ())
            tasks.append({"ask": ask, "edit": edit, "rollback": rollback, "read": read}[kind](*args))
    await asyncio.gather(*tasks)
    for c in opened:
        await c.aclose()
    return t


async def account(url: str, keys: dict, t: Tally, timeout: float = 300) -> list[str]:
    """Edits (and rollbacks) answered 202 that never finished."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=url, timeout=60, headers={"Authorization": f"Bearer {keys['ask']}"}) as c:
        pending = set(t.edits)
        while pending and time.monotonic() < deadline:
            done = set()
            for e in pending:
                edit = (await c.get(f"/edits/{e}")).json()
                finished = edit["status"] in TERMINAL and not (e in t.rollbacks and edit["status"] == "applied")
                done |= {e} if finished else set()
            pending -= done
            await asyncio.sleep(0.5)
    return sorted(pending)


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))] * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--idle-seconds", type=float, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--redis-url", default=None, help="use Redis Streams (default: the embedded queue)")
    args = ap.parse_args()
    keys = {s: new_key() for s in ("ask", "edit", "admin")}
    env = {
        "INSTRUCTEDIT_API_KEYS": ",".join(f"load-{s}:{s}:{hash_key(k)}" for s, k in keys.items()),
        "INSTRUCTEDIT_RATE_LIMIT_PER_SECOND": "0",
        "INSTRUCTEDIT_SNAPSHOT_EVERY": "10",
    }
    counts = mix(args.clients)
    with tempfile.TemporaryDirectory(prefix="load-") as tmp:
        with ServiceProcess(Path(tmp) / "store", redis_url=args.redis_url, env=env) as svc:
            idle = asyncio.run(phase(svc.url, keys, {"ask": counts["ask"]}, args.idle_seconds, args.seed))
            loaded = asyncio.run(phase(svc.url, keys, counts, args.seconds, args.seed + 1))
            unfinished = asyncio.run(account(svc.url, keys, loaded))
    routes = {
        route: {"n": len(xs), "p50_ms": round(pct(xs, 0.5), 1), "p99_ms": round(pct(xs, 0.99), 1), "rps": round(len(xs) / args.seconds, 1)}
        for route, xs in sorted(loaded.latency.items())
    }
    idle_p99 = pct(idle.latency["POST /generate"], 0.99)
    busy_p99 = pct(loaded.latency["POST /generate"], 0.99)
    figures = {
        "load_clients": args.clients,
        "load_seconds": args.seconds,
        "load_errors": len(loaded.errors) + len(idle.errors) + len(unfinished),
        "load_p99_ms": {route: r["p99_ms"] for route, r in routes.items()},
        "generate_p99_ratio_under_edits": round(busy_p99 / idle_p99, 2),
    }
    details = {
        "mix": counts,
        "routes": routes,
        "idle": {
            "clients": counts["ask"],
            "seconds": args.idle_seconds,
            "generate_p50_ms": round(pct(idle.latency["POST /generate"], 0.5), 1),
            "generate_p99_ms": round(idle_p99, 1),
            "n": len(idle.latency["POST /generate"]),
        },  # fmt: skip
        "edits_acknowledged": len(loaded.edits),
        "rollbacks_acknowledged": len(loaded.rollbacks),
        "edits_unfinished": unfinished,
        "errors": (idle.errors + loaded.errors)[:20],
        "queue": "redis" if args.redis_url else "embedded",
        "command": " ".join(sys.argv),
        "statistics_note": "p50/p99 are of whole-request latency seen by the clients, including waiting for a generation slot",
    }
    record("load", figures, details)
    print(figures)
    print({k: details[k] for k in ("mix", "idle", "edits_acknowledged", "rollbacks_acknowledged", "edits_unfinished")})
    for route, r in routes.items():
        print(f"{route:22s} n={r['n']:6d} p50={r['p50_ms']:8.1f} ms p99={r['p99_ms']:8.1f} ms")


if __name__ == "__main__":
    main()

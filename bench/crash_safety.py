"""Crash safety: SIGKILL the real service at random moments while edits are
queued and being applied, 20 times with the embedded queue and 20 times with
a real redis-server, and account for every acknowledged edit.

Per queue mode: one store, 200 edits posted 10 per cycle (each with an
Idempotency-Key), two rollbacks asked per cycle, a SIGKILL 0.2-4 s into the
cycle, then a restart; a POST that got no answer is retried after the restart.
After each restart the version served must have state_sha256 = base + the
store's deltas rebuilt in this process; at the end every edit answered 202 is
applied once, failed with a reason, or rolled back (tests/service/crash.py).

    python bench/crash_safety.py [--kills 20] [--edits 200] [--modes embedded,redis]

Writes crash_runs, edits_lost, edits_doubled, state_mismatches into
bench/results/reliability.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "service")]

from crash import Rebuilder, run_crash_cycles  # noqa: E402
from reliability_results import record  # noqa: E402

from harness import RedisServer  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--edits", type=int, default=200)
    ap.add_argument("--modes", default="embedded,redis")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rebuilder = Rebuilder()
    reports = []
    for mode in args.modes.split(","):
        redis = RedisServer().start() if mode == "redis" else None
        try:
            with tempfile.TemporaryDirectory(prefix=f"crash-{mode}-") as tmp:
                report = run_crash_cycles(Path(tmp), mode=mode, kills=args.kills, edits=args.edits, seed=args.seed,
                                          redis_url=redis.url if redis else None, rebuilder=rebuilder)  # fmt: skip
        finally:
            if redis:
                redis.kill()
        print(mode, dataclasses.asdict(report), flush=True)
        reports.append(report)
    figures = {
        "crash_runs": sum(r.kills for r in reports),
        "edits_lost": sum(r.edits_lost for r in reports),
        "edits_doubled": sum(r.edits_doubled for r in reports),
        "state_mismatches": sum(r.state_mismatches for r in reports),
    }
    record("crash", figures, {"per_mode": [dataclasses.asdict(r) for r in reports], "command": " ".join(sys.argv)})
    print(figures)


if __name__ == "__main__":
    main()

"""The contract fuzz of tests/service/test_contract.py, with its figures recorded.

Starts `instructedit serve` (tiny model, untrained editor, an admin API key,
no rate limit) on loopback, runs schemathesis with every check over every
route, and writes fuzz_cases, fuzz_5xx and fuzz_failures (the failed checks
that are not in the documented list, tests/service/fuzz.py ACCEPTED) into
bench/results/reliability.json.

    python bench/reliability.py [--max-examples 50] [--seed 1]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "service")]

from fuzz import ACCEPTED, run_fuzz  # noqa: E402
from process import ServiceProcess  # noqa: E402
from reliability_results import record  # noqa: E402
from test_contract import keyed_env  # noqa: E402

from service.auth import hash_key, new_key  # noqa: E402,F401


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--max-examples", type=int, default=55, help="schemathesis cases per operation and phase (as tests/service/test_contract.py)"
    )
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    token = new_key()
    with tempfile.TemporaryDirectory(prefix="fuzz-") as tmp:
        with ServiceProcess(Path(tmp) / "store", env=keyed_env(token)) as svc:
            result = run_fuzz(svc.url, Path(tmp) / "fuzz", max_examples=args.max_examples, seed=args.seed,
                              workers=args.workers, headers={"Authorization": f"Bearer {token}"})  # fmt: skip
    unexpected = result.unexpected()
    figures = {"fuzz_cases": result.cases, "fuzz_5xx": result.server_errors, "fuzz_failures": sum(f["count"] for f in unexpected)}
    accepted = [{"code": f["code"], "title": f["title"], "operations": f["operations"]} for f in result.failures]
    record("fuzz", figures, {
        "command": result.command, "seconds": round(result.seconds, 1), "responses": result.responses,
        "failed_checks_all": accepted, "accepted_reasons": {f"{c} {op}": why for (c, op), why in ACCEPTED.items()},
        "rejected_schema_valid_kinds": result.rejected_kinds, "unexpected": unexpected,
    })  # fmt: skip
    print(figures, f"{result.seconds:.0f} s; failed checks (all documented unless listed in fuzz_failures): {accepted}")


if __name__ == "__main__":
    main()

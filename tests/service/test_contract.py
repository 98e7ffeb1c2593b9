"""The schema is the contract: schemathesis, every check, against `instructedit
serve` (its own process, tiny model, untrained editor, API keys on) over
loopback. 0 responses >= 500 and no failed check beyond the documented ones
(fuzz.ACCEPTED, docs/RELIABILITY.md). bench/reliability.py runs the same fuzz
and records the figures."""

import pytest
from fuzz import ACCEPTED, run_fuzz
from process import ServiceProcess

from service.auth import hash_key, new_key

MAX_EXAMPLES = 55  # about 1,130 cases (50 gave 1,028 to 1,041) over the 10 operations and the stateful phase


def keyed_env(token: str) -> dict:
    return {
        "INSTRUCTEDIT_API_KEYS": f"fuzz:admin:{hash_key(token)}",
        "INSTRUCTEDIT_RATE_LIMIT_PER_SECOND": "0",  # the fuzz is one very fast client
        "INSTRUCTEDIT_MAX_NEW_TOKENS": "16",
        "INSTRUCTEDIT_SNAPSHOT_EVERY": "5",
    }


@pytest.mark.timeout(420)
def test_schemathesis_all_checks(tmp_path):
    token = new_key()
    with ServiceProcess(tmp_path / "store", env=keyed_env(token)) as svc:
        result = run_fuzz(svc.url, tmp_path / "fuzz", max_examples=MAX_EXAMPLES, headers={"Authorization": f"Bearer {token}"})
    output = (tmp_path / "fuzz" / "output.txt").read_text()
    assert result.cases >= 1000, (result.cases, output[-3000:])
    assert result.server_errors == 0, output[-5000:]
    assert result.unexpected() == [], output[-5000:]
    assert all(key in ACCEPTED for f in result.failures for key in [(f["code"], op) for op in f["operations"]])

"""SIGKILL `instructedit serve` while edits are being applied, restart it, and
find every acknowledged edit applied once, failed with a reason or rolled back,
with weights equal to base + the store's deltas. A short run of
bench/crash_safety.py (which does 20 kills with each queue)."""

import pytest
from crash import run_crash_cycles


@pytest.mark.timeout(300)
def test_sigkill_loses_and_doubles_nothing(tmp_path):
    report = run_crash_cycles(tmp_path, mode="embedded", kills=2, edits=16, seed=13, kill_window=(1.0, 3.0))
    assert report.problems == []
    assert report.acknowledged == 16
    assert (report.edits_lost, report.edits_doubled, report.state_mismatches, report.failed_without_reason) == (0, 0, 0, 0)
    assert report.rollbacks_acknowledged >= 1 and report.rollbacks_not_done == 0
    assert report.restart_checks == 4

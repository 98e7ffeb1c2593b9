"""bench/results/reliability.json and its table: each reliability bench adds its keys.

The figures of one bench are replaced together (with when and how they were
measured); the others' are kept, so fuzz, crash, load and fault runs can be
made separately. The markdown table is rewritten from the JSON every time.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
JSON_PATH = RESULTS / "reliability.json"
MD_PATH = RESULTS / "reliability.md"


def record(section: str, figures: dict, details: dict | None = None) -> dict:
    """Merge `figures` (the issue's keys, flat) and `details` (under `section`) into the results."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    data = json.loads(JSON_PATH.read_text()) if JSON_PATH.exists() else {}
    data.update(figures)
    data.setdefault("runs", {})[section] = {
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{platform.machine()}, {_cpus()} CPUs",
        "figures": figures,
        **(details or {}),
    }
    JSON_PATH.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    MD_PATH.write_text(table(data))
    return data


def table(data: dict) -> str:
    lines = ["# Reliability figures", "", "Written by bench/reliability.py, bench/crash_safety.py, bench/load.py and bench/faults.py.", ""]
    lines += ["| bench | key | value | measured |", "|---|---|---|---|"]
    for section, run in sorted(data.get("runs", {}).items()):
        for key, value in run["figures"].items():
            lines.append(f"| {section} | `{key}` | {_fmt(value)} | {run['measured_at']} |")
    return "\n".join(lines) + "\n"


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items())
    return str(value)


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 0

"""Merge the rows of other results files into bench/results/quality.json (a
method's rows in a later file replace its rows in the first), then rewrite the
markdown table and the chart.

    python bench/merge_quality.py bench/results/quality.json bench/results/quality_extra.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from editor_core.evaluate import Row
from editor_core.report import _write

main_path, *others = map(Path, sys.argv[1:])
data = json.loads(main_path.read_text())
rows, seconds = data["rows"], dict(data.get("train_seconds", {}))
for path in others:
    extra = json.loads(path.read_text())
    names = {r["method"] for r in extra["rows"]}
    rows = [r for r in rows if r["method"] not in names] + extra["rows"]
    seconds.update(extra.get("train_seconds", {}))
_write([Row(**r) for r in rows], seconds, data["model"], main_path, data.get("mode") == "sequential")
print(f"{main_path}: {len(rows)} rows")

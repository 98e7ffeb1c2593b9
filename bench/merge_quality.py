"""Merge the rows of other results files into bench/results/quality.json (a
method's rows in a later file replace its rows in the first), then rewrite the
markdown table and the chart. --rename OLD=NEW first renames a method already in
the first file, so that a retrained editor can take its name and the earlier
rows stay, under another.

    python bench/merge_quality.py bench/results/quality.json bench/results/quality_extra.json
    python bench/merge_quality.py --rename mend-single=mend-single-v1 bench/results/quality.json runs/q_single.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from editor_core.evaluate import Row
from editor_core.report import _write

ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
ap.add_argument("main", type=Path)
ap.add_argument("others", type=Path, nargs="*")
ap.add_argument("--rename", action="append", default=[], metavar="OLD=NEW")
args = ap.parse_args()
data = json.loads(args.main.read_text())
rows, seconds = data["rows"], dict(data.get("train_seconds", {}))
for old, new in (r.split("=", 1) for r in args.rename):
    rows = [{**r, "method": new} if r["method"] == old else r for r in rows]
    if old in seconds:
        seconds[new] = seconds.pop(old)
for path in args.others:
    extra = json.loads(path.read_text())
    names = {r["method"] for r in extra["rows"]}
    rows = [r for r in rows if r["method"] not in names] + extra["rows"]
    seconds.update(extra.get("train_seconds", {}))
_write([Row(**r) for r in rows], seconds, data["model"], args.main, data.get("mode") == "sequential")
print(f"{args.main}: {len(rows)} rows")

"""Summarize bench/results/quality.json: the paper's comparison (average
Reliability over the four tasks, InstructEdit minus multi-task MEND) and the
issue's targets, met or missed. Writes bench/results/quality_summary.md.

    python bench/summarize_quality.py [bench/results/quality.json]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

TASKS = ("counterfact", "wikirecent", "convsent", "zsre")
# (task, metric, at least): the targets for the shipped editor.
TARGETS = [
    ("zsre", "reliability", 80), ("zsre", "locality", 90),
    ("counterfact", "reliability", 90), ("counterfact", "generalization", 60), ("counterfact", "locality", 85),
    ("wikirecent", "reliability", 90), ("wikirecent", "locality", 85),
]

# Variants whose MEND twin has another name: the plain-prompt row exists only for
# instructed editors, so the twin of an editor trained with it serves its variants
# that differ only in that row (without it, or weighted 0.3) too.
TWINS = {"instructedit-v4-no-raw-row": "mend-multitask", "instructedit-cpu-rw0.3": "mend-multitask-cpu"}


def main(path: Path) -> str:
    data = json.loads(path.read_text())
    rows = [r for r in data["rows"] if r["setting"] != "unseen-instruction"]
    get = {(r["method"], r["task"]): r for r in rows}
    methods = list(dict.fromkeys(r["method"] for r in rows))
    lines = ["| method | " + " | ".join(f"{t} Rel" for t in TASKS) + " | mean Rel |", "|---" * (len(TASKS) + 2) + "|"]
    means = {}
    for m in methods:
        vals = [get.get((m, t), {}).get("reliability") for t in TASKS]
        present = [v for v in vals if v is not None]
        means[m] = sum(present) / len(present) if len(present) == len(TASKS) else None
        mean = "" if means[m] is None else f"{means[m]:.1f}"
        lines.append(f"| {m} | " + " | ".join("" if v is None else f"{v:.1f}" for v in vals) + f" | {mean} |")
    out = ["## Reliability per task (single edits)", "", *lines, ""]
    # Each InstructEdit variant against the multi-task MEND trained with the same
    # recipe and budget: instructedit / mend-multitask, instructedit-v3 / mend-multitask-v3, ...
    for ie in [m for m in methods if m.startswith("instructedit")]:
        mend = TWINS.get(ie, "mend-multitask" + ie[len("instructedit"):])
        if means.get(ie) is None or means.get(mend) is None:
            continue
        diff = means[ie] - means[mend]
        per = {t: get[(ie, t)]["reliability"] - get[(mend, t)]["reliability"] for t in TASKS}
        out += [f"{ie} minus {mend}, mean Reliability: **{diff:+.1f}** points "
                f"(target: at least +10; the paper: +14.86 on GPT2-XL). Per task: "
                + ", ".join(f"{t} {v:+.1f}" for t, v in per.items()) + ".", ""]
    variants = [m for m in methods if m.startswith("instructedit")]
    out += ["## The issue's targets for InstructEdit", "",
            "| task | metric | target | " + " | ".join(variants) + " |", "|---|---|---|" + "---|" * len(variants)]
    for task, metric, least in TARGETS:
        cells = []
        for m in variants:
            v = get.get((m, task), {}).get(metric)
            cells.append("" if v is None else f"{v:.1f} ({'met' if v >= least else 'missed'})")
        out.append(f"| {task} | {metric} | ≥ {least} | " + " | ".join(cells) + " |")
    text = "\n".join(out) + "\n"
    (path.parent / "quality_summary.md").write_text(text)
    return text


if __name__ == "__main__":
    print(main(Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "results" / "quality.json")))

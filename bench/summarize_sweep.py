"""Training runs side by side, as read from their training cards: steps, wall
time and the best validation scores of every run (validation splits only; the
test splits play no part in the choice of a recipe or an editor).

    python bench/summarize_sweep.py runs/sweep/ie-a runs/sweep/mend-a ...      # add runs (named by their folder)
    python bench/summarize_sweep.py cpu5/ie-p1=runs/cpu/ie-p1                   # under another name
    python bench/summarize_sweep.py --fresh runs/sweep/*                        # a table of these runs only

Runs already in OUT stay (a run of the same name is replaced). Writes OUT
(bench/results/recipe_sweep.json) and its .md, and prints the InstructEdit run
with the best validation score.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from editor_core.train import selection_score

OUT = Path(__file__).parent / "results" / "recipe_sweep.json"
KEYS = ("rel", "gen", "loc", "after", "raw")


def from_card(path: Path) -> dict:
    card = json.loads((path / "card.json").read_text())
    cfg = card["config"]
    return {"step": card["step"], "wall_seconds": round(card["wall_seconds"], 1), "stopped": card.get("stopped"), "best": card["best"],
            "config": {k: cfg.get(k) for k in ("instruct", "kl_scope", "c_loc", "c_edit", "hard_negatives", "cross_locality",
                                                "raw_rephrase_prob", "raw_prompt_row", "raw_row_weight", "init_from",
                                                "tasks")}}


def describe(c: dict) -> str:
    """A run's recipe in a few words, from its card's config."""
    parts = [f"kl {c['kl_scope']}", f"c_loc {c['c_loc']}"]
    if c.get("hard_negatives"):
        parts.append(f"{c['hard_negatives']} hard negatives")
    if c.get("cross_locality"):
        parts.append("cross-task probe")
    if c.get("raw_prompt_row") and c["instruct"]:
        weight = c.get("raw_row_weight", 1.0)
        parts.append("plain-prompt row" + (f" x{weight}" if weight != 1.0 else ""))
    if c.get("tasks") and len(c["tasks"]) == 1:
        parts.append(f"{c['tasks'][0]} only")
    if c.get("init_from"):
        parts.append(f"from {Path(c['init_from']).parent.name}")
    return ", ".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="run folders (with card.json), or NAME=FOLDER")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--fresh", action="store_true", help="leave out the runs already in OUT")
    args = ap.parse_args()
    runs = {} if args.fresh or not args.out.exists() else json.loads(args.out.read_text())
    runs = {k: v for k, v in runs.items() if not k.startswith("_")}
    for arg in args.runs:
        name, _, d = arg.rpartition("=")
        runs[name or Path(d).name] = from_card(Path(d))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(runs, indent=1))
    lines = ["| run | editor | recipe | steps | wall | best val step | Rel | Gen | Loc | after | raw | score |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in runs.items():
        c, b = r["config"], r["best"] or {}
        recipe = describe(c)
        # Cards written before the score counted spill-over have another score: recompute it by today's rule.
        best = [b.get(k) for k in KEYS] + [selection_score(b) if b else None]
        cells = " | ".join("" if v is None or v != v else f"{v:.1f}" for v in best)
        editor = "InstructEdit" if c["instruct"] else "MEND"
        lines.append(f"| {name} | {editor} | {recipe} | {r['step']} | {r['wall_seconds'] / 60:.1f} min | "
                     f"{b.get('step', '')} | {cells} |")
    note = ("Validation splits, 30 records per trained task. `score` is today's selection score, mean(rel, gen, loc, after, raw), "
            "recomputed from each run's best checkpoint; the GPU runs (ie-a..mend-c, ie-b, mend-b) and the CPU-only first phases "
            "(cpu/*-p1 and cpu5/*-p1, `--select-on rel,gen,loc`) chose that checkpoint by mean(rel, gen, loc), and did not measure `raw`. "
            "cpu/* is `bench/cpu_budget.sh`: the v4 recipe on this 2-core CPU alone, one thread per editor, side by side. "
            "cpu5/* is the same script in the fifth session (`RUNS=\"ie-rw0.3 mend-single\"`), on a machine about 1.4x faster "
            "per step than the fourth session's; single-task runs validate on CounterFact alone.\n\n")
    args.out.with_suffix(".md").write_text(note + "\n".join(lines) + "\n")
    print("\n".join(lines))
    scored = {n: selection_score(r["best"]) for n, r in runs.items() if r["config"]["instruct"] and r["best"]}
    if scored:
        print(f"best InstructEdit run on validation: {max(scored, key=scored.get)}")


if __name__ == "__main__":
    main()

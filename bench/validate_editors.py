"""Score trained editors on the validation splits, the only data a choice of
editor may be made on. Each validation record is edited alone from the
unedited weights (as in training's validation, but on more records).

Columns: reliability, generalization and locality (as in training), and
`after`, how often the token after the new target is still the one the
unedited model predicts there (low: the edit spills over, "Rome Rome").
`raw` (instructed editors) is reliability on the plain edit prompt, without
the instruction the edit was made with: what a user of the service then asks.
`score` = mean(rel, gen, loc, after, raw) (`editor_core.train.selection_score`):
the rule for which editor ships, and what training's early stopping follows.

    python bench/validate_editors.py --per-task 50 \
        v1=editor_core/artifacts/smollm2-135m/instructedit.safetensors v4=runs/instructedit-v4/best.safetensors

Writes bench/results/validation.{json,md}; --append adds to the editors already there.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from editor_core.editors import load_editor
from editor_core.hooks import SplitRunner
from editor_core.models import load_model
from editor_core.train import TrainConfig, training_pools, validate

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("editors", nargs="+", help="NAME=PATH of saved editors")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--per-task", type=int, default=50)
    ap.add_argument("--out", type=Path, default=RESULTS / "validation.json")
    ap.add_argument("--append", action="store_true", help="keep OUT's rows of other editors (same per-task count only)")
    args = ap.parse_args()

    torch.manual_seed(0)
    model, tok = load_model(args.model)
    cfg = TrainConfig(model=args.model, val_per_task=args.per_task)
    pools = training_pools(cfg, "val")
    records = [r for t in sorted(pools) for r in pools[t][: args.per_task]]
    rows = []
    for spec in args.editors:
        name, _, path = spec.partition("=")
        editor = load_editor(path, model)
        t0 = time.time()
        res = validate(editor, SplitRunner(model, editor.spec), tok, records, cfg)
        rows.append({"editor": name, "path": path, "n": len(records), "seconds": round(time.time() - t0, 1),
                     **{k: None if v != v else round(v, 1) for k, v in res.items() if k != "tasks"}, "tasks": res["tasks"]})
        print(f"{name}: rel {res['rel']:.1f} gen {res['gen']:.1f} loc {res['loc']:.1f} after {res['after']:.1f} raw {res['raw']:.1f} "
              f"score {res['score']:.1f}")
    if args.append and args.out.exists():
        old = json.loads(args.out.read_text())
        if old["per_task"] != args.per_task:
            raise SystemExit(f"{args.out} holds {old['per_task']} records per task, not {args.per_task}: not comparable")
        names = {r["editor"] for r in rows}
        rows = [r for r in old["rows"] if r["editor"] not in names] + rows
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"model": args.model, "per_task": args.per_task, "rows": rows}, indent=1))
    lines = ["| editor | n | Rel | Gen | Loc | after | raw | score |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['editor']} | {r['n']} | {r['rel']} | {r['gen']} | {r['loc']} | {r['after']} | {r['raw']} | **{r['score']}** |"
              for r in rows]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

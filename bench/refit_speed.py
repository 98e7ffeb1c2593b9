"""How long a refit takes with `hooks.MLPTop`'s short path, against the whole top, in the same run.

    python bench/refit_speed.py --edits 6      # SmolLM2 + the shipped editor, validation records

Each edit is refit twice from the same editor delta: once as shipped (the short
path: the first top block's attention and its MLP input run once, the last
block's MLP and the head only where a loss reads them), once with every step
running the whole top. The two must take the same steps and give the same
correction (the short path is exact, not an approximation); the ratio is of
their wall-clock seconds. Writes bench/results/refit_speed.json and .md.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from lifelong import RESULTS, SHIPPED

from editor_core import hooks
from editor_core.editors import load_editor
from editor_core.lifelong import lifelong_records
from editor_core.models import load_model
from editor_core.refit import RefitConfig, refit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--edits", type=int, default=6)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, tok = load_model(args.model)
    editor = load_editor(SHIPPED, model)
    config = RefitConfig()
    rows = []
    for record in lifelong_records("val", args.edits):
        delta = editor.compute_delta(model, tok, [record])
        timed = {}
        for name, short in (("short", True), ("whole", False)):  # the baseline: the whole top every step, as before
            hooks.MLPTop.use_short = short
            try:
                t = time.perf_counter()
                res = refit(model, tok, editor.spec, record.prompt, record.target_new, delta, config, subject=record.subject)
                timed[name] = (time.perf_counter() - t, res)
            finally:
                hooks.MLPTop.use_short = True
        (short_s, short), (whole_s, whole) = timed["short"], timed["whole"]
        gap = max(float((a - b).abs().max()) for p in short.delta.factors for a, b in zip(short.delta.factors[p], whole.delta.factors[p]))
        rows.append(
            {
                "prompt": record.prompt,
                "steps": short.steps,
                "same_steps": short.steps == whole.steps,
                "max_factor_gap": gap,
                "seconds_short": short_s,
                "seconds_whole": whole_s,
            }
        )
        print(rows[-1], flush=True)
    total_short = sum(r["seconds_short"] for r in rows)
    total_whole = sum(r["seconds_whole"] for r in rows)
    out = {
        "model": args.model,
        "threads": args.threads,
        "refit": config.__dict__,
        "edits": rows,
        "refit_seconds_ratio_short_to_whole": total_short / total_whole,
        "seconds_per_refit_short": total_short / len(rows),
        "seconds_per_refit_whole": total_whole / len(rows),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "refit_speed.json").write_text(json.dumps(out, indent=1) + "\n")
    lines = [
        f"# Refit speed, {args.model}, {args.threads} thread(s), {len(rows)} validation edits",
        "",
        "| refit top | s per refit | ratio | same steps | largest factor gap |",
        "|---|---|---|---|---|",
        f"| whole top every step (baseline) | {out['seconds_per_refit_whole']:.1f} | 1.00 | | |",
        f"| short path (`hooks.MLPTop`) | {out['seconds_per_refit_short']:.1f} | {out['refit_seconds_ratio_short_to_whole']:.2f} | "
        f"{sum(r['same_steps'] for r in rows)}/{len(rows)} | {max(r['max_factor_gap'] for r in rows):.1e} |",
        "",
        "Reproduce: `python bench/refit_speed.py --edits 6`.",
    ]
    (RESULTS / "refit_speed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

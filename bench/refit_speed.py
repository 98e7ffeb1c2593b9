"""How long a refit takes as shipped, against slower exact forms of it, in the same run.

    python bench/refit_speed.py --edits 6      # SmolLM2 + the shipped editor, validation records

Each edit is refit four times from the same editor delta:

* baseline: every step runs the whole top, and every KL anchor reads the whole vocabulary;
* `hooks.MLPTop`'s short path (the first top block's attention and its MLP input run
  once, the last block's MLP and the head only where a loss reads them), whole
  vocabulary: exact, so it must take the baseline's steps and give its correction;
* as shipped: the short path, and the subject anchors' distributions restricted
  to the base's likeliest tokens (`RefitConfig.anchor_vocab`; what follows the
  answer, `keep`, reads the whole vocabulary): an approximation, so its steps and
  correction may differ (its quality is measured by bench/lifelong.py);

and once more as shipped but with nothing kept past the answer (`keep=0`,
session 12's default), to show what keeping it costs.

All of them compute the KL with W^T p held once (session 12); the form before
that is not kept. One refit runs first, untimed, so that no form pays the
warm-up. Ratios are of wall-clock seconds against the baseline. Writes
bench/results/refit_speed.json and .md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import torch
from lifelong import RESULTS, SHIPPED

from editor_core import hooks
from editor_core.editors import load_editor
from editor_core.lifelong import lifelong_records
from editor_core.models import load_model
from editor_core.refit import RefitConfig, refit


def factor_gap(got: dict, want: dict) -> float:
    """The largest difference of a delta's factors from another's (inf where their ranks differ)."""
    if got.keys() != want.keys() or any(got[p][0].shape != want[p][0].shape for p in want):
        return float("inf")
    return max(float((a - b).abs().max()) for p in want for a, b in zip(got[p], want[p]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--edits", type=int, default=6)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, tok = load_model(args.model)
    editor = load_editor(SHIPPED, model)
    shipped = RefitConfig()
    exact = dataclasses.replace(shipped, anchor_vocab=0)
    forms = (  # name, the short path, config
        ("whole top every step, whole vocabulary (baseline)", False, exact),
        ("short path (`hooks.MLPTop`), whole vocabulary", True, exact),
        (f"short path, anchors on {shipped.anchor_vocab} likeliest tokens (shipped)", True, shipped),
        ("the same, nothing kept past the answer (keep=0, session 12's default)", True, dataclasses.replace(shipped, keep=0)),
    )
    rows = []
    records = lifelong_records("val", args.edits)
    warm = records[0]  # untimed
    refit(model, tok, editor.spec, warm.prompt, warm.target_new, editor.compute_delta(model, tok, [warm]), shipped, subject=warm.subject)
    for record in records:
        delta = editor.compute_delta(model, tok, [record])
        timed = []
        for _name, short, config in forms:
            hooks.MLPTop.use_short = short
            try:
                t = time.perf_counter()
                res = refit(model, tok, editor.spec, record.prompt, record.target_new, delta, config, subject=record.subject)
                timed.append((time.perf_counter() - t, res))
            finally:
                hooks.MLPTop.use_short = True
        rows.append(
            {
                "prompt": record.prompt,
                "steps": [res.steps for _, res in timed],
                "took": [res.took for _, res in timed],
                "kept": [res.kept for _, res in timed],
                "factor_gap": [factor_gap(res.delta.factors, timed[0][1].delta.factors) for _, res in timed],
                "seconds": [s for s, _ in timed],
            }
        )
        print(rows[-1], flush=True)
    totals = [sum(r["seconds"][k] for r in rows) for k in range(len(forms))]
    out = {
        "model": args.model,
        "threads": args.threads,
        "refit": dataclasses.asdict(shipped),
        "forms": [name for name, _, _ in forms],
        "edits": rows,
        "seconds_per_refit": [t / len(rows) for t in totals],
        "ratio_to_baseline": [t / totals[0] for t in totals],
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "refit_speed.json").write_text(json.dumps(out, indent=1) + "\n")
    lines = [
        f"# Refit speed, {args.model}, {args.threads} thread(s), {len(rows)} validation edits",
        "",
        "| refit | s per refit | ratio | steps as baseline | took / kept | largest factor gap |",
        "|---|---|---|---|---|---|",
    ]
    for k, (name, _, _) in enumerate(forms):
        same = sum(r["steps"][k] == r["steps"][0] for r in rows)
        took = sum(r["took"][k] for r in rows)
        kept = sum(r["kept"][k] for r in rows)
        lines.append(
            f"| {name} | {out['seconds_per_refit'][k]:.1f} | {out['ratio_to_baseline'][k]:.2f} | {same}/{len(rows)} | "
            f"{took} / {kept} of {len(rows)} | {max(r['factor_gap'][k] for r in rows):.1e} |"
        )
    lines += ["", "Reproduce: `python bench/refit_speed.py --edits 6`."]
    (RESULTS / "refit_speed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

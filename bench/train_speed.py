"""Seconds per editor-training step, and per edit, as ratios to one plain
forward+backward of the model on the same batch, measured in the same run.

The baseline is what the reference's floor measures: a full forward of the
model over exactly the rows a training step uses (edit prompt, rephrasing,
locality prompt), then a backward pass that takes gradients of the edited
weights only. Steps alternate with baseline passes so that both see the same
machine load.

    python bench/train_speed.py [--model smollm2-135m] [--steps 30] [--recipe NAME] \
        [--rank R] [--kl-scope S] [--hard-negatives N]

The training recipe is a named one (editor_core/recipes/) or, by default,
TrainConfig's defaults (the shipped editor's); the options override it.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

import torch

from editor_core.data import load_task_split
from editor_core.editors import build_editor
from editor_core.hooks import SplitRunner
from editor_core.losses import masked_nll
from editor_core.models import load_model
from editor_core.tokens import encode_pairs
from editor_core.train import NeighbourIndex, build_rows, edit_step, extra_probes
from editor_core.train_config import make_config

OUT = Path(__file__).parent / "results"


def fwd_bwd(model, batch, params) -> float:
    for p in params:
        p.requires_grad_(True)
    t = time.perf_counter()
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False).logits
    loss = masked_nll(logits, batch.labels)
    torch.autograd.grad(loss, params)
    dt = time.perf_counter() - t
    for p in params:
        p.requires_grad_(False)
    return dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--edits", type=int, default=20)
    ap.add_argument("--recipe", help="a named training recipe (default: TrainConfig's defaults)")
    ap.add_argument("--rank", type=int)
    ap.add_argument("--kl-scope")
    ap.add_argument("--hard-negatives", type=int)
    ap.add_argument("--out", type=Path, default=OUT, help="folder for train_speed.{json,md}")
    args = ap.parse_args()
    torch.manual_seed(0)
    model, tok = load_model(args.model)
    given = {"rank": args.rank, "kl_scope": args.kl_scope, "hard_negatives": args.hard_negatives}
    cfg = make_config(args.recipe, **{k: v for k, v in given.items() if v is not None})
    editor = build_editor("mend", model, rank=cfg.rank).train()
    opt = torch.optim.Adam(editor.parameters(), lr=1e-5)
    runner = SplitRunner(model, editor.spec)
    params = [model.get_parameter(p) for p in editor.spec.edit_params]
    pools = {t: load_task_split(t, "train") for t in ("counterfact", "wikirecent", "convsent")}
    neighbours = NeighbourIndex(pools)
    pool = [r for t in pools for r in pools[t][:200]]
    rng = random.Random(0)
    step_t, base_t, tokens = [], [], []
    for i in range(args.steps + 3):
        recs = [rng.choice(pool)]
        extra = extra_probes(cfg, pools, neighbours, recs, rng)
        state = rng.getstate()
        t = time.perf_counter()
        out = edit_step(editor, runner, tok, recs, rng, cfg, extra_locality=extra)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        dt = time.perf_counter() - t
        rng2 = random.Random()
        rng2.setstate(state)  # the same rows as the step
        prompts, answers, _ = build_rows(editor, recs, rng2, True, cfg.raw_rephrase_prob, extra, cfg.raw_prompt_row)
        batch = encode_pairs(tok, prompts, answers, max_length=editor.config.max_length)
        db = fwd_bwd(model, batch, params)
        if i >= 3:  # warm-up
            step_t.append(dt), base_t.append(db), tokens.append(int(batch.attention_mask.sum()))
    editor.eval()
    edit_t, edit_base = [], []
    for r in pool[: args.edits]:
        t = time.perf_counter()
        editor.compute_delta(model, tok, [r])
        edit_t.append(time.perf_counter() - t)
        rec = editor.instructed(r)
        edit_base.append(fwd_bwd(model, encode_pairs(tok, [rec.prompt], [rec.target_new]), params))
    ftl = build_editor("ft-l", model)
    ftl_t = []
    for r in pool[: max(3, args.edits // 4)]:
        t = time.perf_counter()
        ftl.compute_delta(model, tok, [r])
        ftl_t.append(time.perf_counter() - t)
    med = statistics.median
    res = {
        "model": args.model,
        "rank": cfg.rank,
        "recipe": {"kl_scope": cfg.kl_scope, "hard_negatives": cfg.hard_negatives, "raw_prompt_row": cfg.raw_prompt_row},
        "hypernetwork_parameters": sum(p.numel() for p in editor.parameters()),
        "threads": torch.get_num_threads(),
        "step_seconds_median": med(step_t),
        "fwd_bwd_seconds_median": med(base_t),
        "step_ratio_to_fwd_bwd": med([s / b for s, b in zip(step_t, base_t)]),
        "tokens_per_step_median": med(tokens),
        "edit_seconds_median": med(edit_t),
        "edit_fwd_bwd_seconds_median": med(edit_base),
        "edit_ratio_to_fwd_bwd": med([s / b for s, b in zip(edit_t, edit_base)]),
        "ftl_edit_seconds_median": med(ftl_t),
        "reference": {"step_seconds_rank1920": 1.20, "step_ratio": 9.0, "edit_seconds": "0.31-0.45", "ftl_edit_seconds": 3.48},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "train_speed.json").write_text(json.dumps(res, indent=1))
    md = (
        "| measure | ours | ratio to fwd+bwd (same run) | reference (EasyEdit) |\n|---|---|---|---|\n"
        f"| training step (rank {cfg.rank}) | {res['step_seconds_median']:.3f} s | {res['step_ratio_to_fwd_bwd']:.2f}x "
        "| 1.20 s, 9x (rank 1920) |\n"
        f"| plain fwd+bwd, same rows | {res['fwd_bwd_seconds_median']:.3f} s | 1x | |\n"
        f"| one edit, trained-editor path | {res['edit_seconds_median']:.3f} s | {res['edit_ratio_to_fwd_bwd']:.2f}x "
        "| 0.31-0.45 s, 2.4-3.4x |\n"
        f"| FT-L edit | {res['ftl_edit_seconds_median']:.3f} s | | 3.48 s |\n"
    )
    (args.out / "train_speed.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()

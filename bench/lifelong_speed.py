"""Speed of the routed memory with many edits held, as ratios against baselines measured in the same run.

    python bench/lifelong_speed.py            # SmolLM2 + the shipped editor, 1000 edits held

* edit_visible_ratio_to_fwd_bwd: one edit from request to a published version
  that says it (the editor's delta on the base, its quick fit, `refit.QUICK`,
  then the new version's memory built, as the worker does) against one
  forward+backward of the model on an edit's prompt and target; each timed
  apply is another record's (the fit's steps differ by record), sent without
  rephrasings (the fit would also fit those; with them:
  `edit_visible_with_rephrasings_ratio_to_fwd_bwd`). Also the same without the
  quick fit (the editor's delta alone, which a generation seldom shows:
  `apply_editor_only`). The chat template's and the instruction's fixed
  prefixes are held by `hooks.PrefixCache` from the untimed first call on, as
  in a running service after its first edit.
* generate_ratio_1000_edits: greedy tokens/s of a question that falls in no
  edit's scope, with 1000 edits held (routing included), against the unedited
  model; and the same for a question inside one edit's scope (its tree built
  once and cached, as the service does).
* rollback_ratio_1000: rolling a random edit out of 1000 (the version's memory
  rebuilt without it) against one edit's apply.

The 1000 held edits are keyed on the prompts of 1000 CounterFact and ZsRE
validation records; their deltas are real editor deltas of those records
(computed once, cached under runs/), or, with --distinct K, K of them reused. Results go to bench/results/lifelong.json ("speed").
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import random
import statistics
import time
from pathlib import Path

import torch
from lifelong import RESULTS, SHIPPED

from editor_core.chat import chat_prompt
from editor_core.delta import Delta
from editor_core.editors import load_editor
from editor_core.lifelong import lifelong_records as edit_records
from editor_core.models import load_model
from editor_core.refit import QUICK, refit_records
from editor_core.routing import MemoryEntry, scope_of
from editor_core.tokens import encode_pairs
from service.generation import Sampling, generate
from service.state import ModelState


def timed(fn, repeat: int) -> float:
    """Median seconds of `repeat` calls (after one warm-up)."""
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cache", type=Path, default=Path("runs/lifelong-cache/speed"))
    ap.add_argument(
        "--distinct",
        type=int,
        default=0,
        help="compute only this many editor deltas and reuse them across the N entries (0: one per record); "
        "what routing, generation and rollback cost does not depend on the deltas' values",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, tok = load_model("smollm2-135m")
    editor = load_editor(SHIPPED, model)
    state = ModelState(model, tok, editor.spec.edit_params)
    records = edit_records("val", args.n, strict=False) + edit_records("test", args.n, strict=False)
    records = records[: args.n]

    def delta_of(i: int) -> Delta:
        path = args.cache / f"{i}.safetensors"
        if path.exists():
            return Delta.load(path)
        d = editor.compute_delta(state.work, tok, [records[i]])
        path.parent.mkdir(parents=True, exist_ok=True)
        d.save(path)
        return d

    distinct = args.distinct or len(records)
    deltas = [delta_of(i) for i in range(distinct)]
    entries = [MemoryEntry(f"e{i}", deltas[i % distinct], scope_of(r.prompt, subject=r.subject)) for i, r in enumerate(records)]
    print(f"{len(entries)} edits ready", flush=True)
    probe = records[0]

    # one forward+backward of the whole model on the edit's prompt and target (gradients for every weight,
    # as fine-tuning it would take)
    batch = encode_pairs(tok, [probe.prompt], [probe.target_new])
    params = list(model.parameters())

    def fwd_bwd():
        for p in params:
            p.requires_grad_(True)
        with torch.enable_grad():
            logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False).logits
            loss = torch.nn.functional.cross_entropy(logits[batch.answer_mask], batch.labels[batch.answer_mask])
            loss.backward()
        for p in params:
            p.grad = None
            p.requires_grad_(False)

    held = entries[:-1]

    def applier(quick: bool, rephrasings: bool = False):
        turn = itertools.count()

        def apply_one():  # the worker's path: delta on the base, its quick fit, then the new version's memory
            r = records[-1 - next(turn) % (args.repeat + 1)]
            d = editor.compute_delta(state.work, tok, [r])
            if quick:  # by default an edit sent without rephrasings, as bench/lifelong.py's routed+quick fits it
                sent = r if rephrasings else dataclasses.replace(r, rephrase_prompts=())
                d = refit_records(state.work, tok, editor.spec, [sent], d, QUICK).delta
            state.routed_snapshot(len(held) + 1, [*held, MemoryEntry("new", d, scope_of(r.prompt, subject=r.subject))])

        return apply_one

    rng = random.Random(0)

    def rollback_one():
        out = rng.randrange(len(entries))
        state.routed_snapshot(len(entries) + 1, [e for i, e in enumerate(entries) if i != out])

    t_fwd_bwd, t_apply, t_rollback = timed(fwd_bwd, args.repeat), timed(applier(True), args.repeat), timed(rollback_one, args.repeat)
    t_editor, t_rephrased = timed(applier(False), args.repeat), timed(applier(True, rephrasings=True), args.repeat)

    snap = state.routed_snapshot(len(entries), entries)
    unrelated, inside = "Tell me about the history of the bicycle.", probe.prompt
    # asked through the chat template, where the model answers at length (a bare question often ends at once)
    ids_u, ids_i = tok(chat_prompt(tok, unrelated))["input_ids"], tok(chat_prompt(tok, inside))["input_ids"]
    s = Sampling(32)

    def tokens_per_s(tree_of, ids) -> float:
        def go():
            out = generate(tree_of(), tok, ids, s)
            go.tokens = out.tokens

        sec = timed(go, args.repeat)
        if not go.tokens:
            raise SystemExit("the model answered nothing; tokens/s needs a prompt it answers at length")
        return go.tokens / sec

    base_tps = tokens_per_s(lambda: state.base_tree, ids_u)
    held_tps = tokens_per_s(lambda: snap.tree_for(unrelated), ids_u)
    base_tps_i = tokens_per_s(lambda: state.base_tree, ids_i)
    held_tps_i = tokens_per_s(lambda: snap.tree_for(inside), ids_i)
    speed = {
        "n_edits": len(entries),
        "edit_visible_ratio_to_fwd_bwd": t_apply / t_fwd_bwd,
        "generate_ratio_1000_edits": held_tps / base_tps,
        "generate_ratio_1000_edits_in_scope": held_tps_i / base_tps_i,
        "rollback_ratio_1000": t_rollback / t_apply,
        "edit_applied_ratio_to_fwd_bwd": t_editor / t_fwd_bwd,  # the editor's delta alone, before session 15
        "edit_visible_with_rephrasings_ratio_to_fwd_bwd": t_rephrased / t_fwd_bwd,  # the caller's rephrasings fitted too
        "seconds": {
            "fwd_bwd": t_fwd_bwd,
            "apply": t_apply,
            "apply_editor_only": t_editor,
            "apply_with_rephrasings": t_rephrased,
            "rollback": t_rollback,
        },
        "tokens_per_second": {
            "unedited": base_tps,
            "held_unrelated": held_tps,
            "unedited_in_scope_prompt": base_tps_i,
            "held_in_scope": held_tps_i,
        },
        "threads": args.threads,
        "distinct_deltas": distinct,
    }
    out = RESULTS / "lifelong.json"
    done = json.loads(out.read_text()) if out.exists() else {"model": "smollm2-135m", "rows": []}
    done["speed"] = speed
    out.write_text(json.dumps(done, indent=1) + "\n")
    print(json.dumps(speed, indent=1))


if __name__ == "__main__":
    main()

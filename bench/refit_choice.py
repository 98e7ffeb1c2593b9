"""Choose the refit's settings on validation records (ZsRE train[:12], CounterFact val[500:512]).

For each record: the editor's delta from the unedited weights, then a refit
with each candidate setting; then greedy answers to the prompt and to its
rephrasing, asked plainly and in the chat template, and the fluency of a
40-token continuation of the prompt (EOS suppressed) against the unedited
model's. Writes bench/results/refit_choice.{json,md}.

    python bench/refit_choice.py          # every candidate
    python bench/refit_choice.py F G      # only these, merged into the results
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

from editor_core import metrics
from editor_core.chat import chat_prompt
from editor_core.data.splits import load_task_split
from editor_core.delta import base_weights, load_weights, materialize
from editor_core.editors import load_editor
from editor_core.models import load_model
from editor_core.refit import RefitConfig, refit

SHIPPED = Path(__file__).resolve().parents[1] / "editor_core" / "artifacts" / "smollm2-135m" / "instructedit.safetensors"
RESULTS = Path(__file__).resolve().parent / "results"
# The refit's settings when these candidates were measured (session 8), so that a later
# change of the defaults does not change what a candidate names: stop at bare argmax, no
# made variants, one weight, nothing kept, the whole vocabulary.
THEN = RefitConfig(min_prob=0.0, variants=0, n_weights=1, keep=0, subject_questions=0, anchor_vocab=0)


def _then(**changes) -> RefitConfig:
    return dataclasses.replace(THEN, **changes)


CANDIDATES = {  # name: (start from the editor's delta?, settings)
    "A: rank 8, lr 1e-2, stop at argmax": (True, _then(lr=1e-2, rank=8, steps=60)),
    "B: A + every answer token p >= 0.5": (True, _then(lr=1e-2, rank=8, steps=60, min_prob=0.5)),
    "C: B + 4 made variants": (True, _then(lr=1e-2, rank=8, steps=60, min_prob=0.5, variants=4)),
    "D: C + keep 16 tokens after the answer": (True, _then(lr=1e-2, rank=8, steps=60, min_prob=0.5, variants=4, keep=16)),
    "E: A + keep 16 tokens after the answer": (True, _then(lr=1e-2, rank=8, steps=60, keep=16)),
    "F: C + keep 16, weight 0.3": (True, _then(lr=1e-2, rank=8, steps=60, min_prob=0.5, variants=4, keep=16, keep_weight=0.3)),
    "G: F with p >= 0.8": (True, _then(lr=1e-2, rank=8, steps=60, min_prob=0.8, variants=4, keep=16, keep_weight=0.3)),
    "H: C + keep 16, weight 0.1": (True, _then(lr=1e-2, rank=8, steps=60, min_prob=0.5, variants=4, keep=16, keep_weight=0.1)),
    "I: C with p >= 0.8": (True, _then(lr=1e-2, rank=8, steps=60, min_prob=0.8, variants=4)),
    "J: I + keep 16 tokens after the answer": (True, _then(lr=1e-2, rank=8, steps=60, min_prob=0.8, variants=4, keep=16)),
    "K: J with rank 16": (True, _then(lr=1e-2, rank=16, steps=60, min_prob=0.8, variants=4, keep=16)),
    "L: I + keep 2 tokens after the answer": (True, _then(lr=1e-2, rank=8, steps=60, min_prob=0.8, variants=4, keep=2)),
    "M: I on 4 weights (block 28's down_proj, block 29's MLP)": (
        True,
        _then(lr=1e-2, rank=8, steps=60, min_prob=0.8, variants=4, n_weights=4),
    ),
    "O: M + keep 2 tokens after the answer": (True, _then(lr=1e-2, rank=8, steps=60, min_prob=0.8, variants=4, n_weights=4, keep=2)),
    "P: O with 100 steps at most": (True, _then(lr=1e-2, rank=8, steps=100, min_prob=0.8, variants=4, n_weights=4, keep=2)),
}
COLUMNS = ("took", "steps", "seconds", "rel_plain", "rel_chat", "gen_plain", "gen_chat", "fluency")


def main(argv: list[str] | None = None) -> None:
    """Runs the candidates whose letters are given (all by default) and merges them into the results."""
    letters = set(sys.argv[1:] if argv is None else argv)
    todo = {name: c for name, c in CANDIDATES.items() if not letters or name.split(":")[0] in letters}
    torch.set_num_threads(1)
    model, tok = load_model("smollm2-135m")
    editor = load_editor(SHIPPED, model)
    base = base_weights(model, editor.spec.edit_params)
    records = load_task_split("zsre", "train")[:12] + load_task_split("counterfact", "val")[500:512]
    unedited = metrics.fluency(model, tok, [r.prompt for r in records], max_new_tokens=40)
    rows: dict[str, list[list[float]]] = {}
    for r, flu0 in zip(records, unedited):
        load_weights(model, base)
        delta = editor.compute_delta(model, tok, [r])
        for name, (from_editor, cfg) in todo.items():
            t = time.perf_counter()
            out = refit(model, tok, editor.spec, r.prompt, r.target_new, delta if from_editor else None, cfg)
            seconds = time.perf_counter() - t
            load_weights(model, materialize(base, [out.delta]))
            asked = [r.prompt, chat_prompt(tok, r.prompt), r.rephrase_prompts[0], chat_prompt(tok, r.rephrase_prompts[0])]
            said = metrics.generate_answers(model, tok, asked)
            flu = metrics.fluency(model, tok, [r.prompt], max_new_tokens=40)[0] / flu0
            load_weights(model, base)
            rows.setdefault(name, []).append(
                [float(out.took), out.steps, seconds, *(metrics.answer_exact(s, r.target_new) for s in said), flu]
            )
    summary = {name: dict(zip(COLUMNS, (sum(c) / len(c) for c in zip(*vals)))) for name, vals in rows.items()}
    path = RESULTS / "refit_choice.json"
    if path.exists() and letters:
        summary = {**json.loads(path.read_text())["candidates"], **summary}
        summary = {name: summary[name] for name in CANDIDATES if name in summary}
    path.write_text(json.dumps({"n_records": len(records), "candidates": summary}, indent=1) + "\n")
    lines = [
        "| refit | took % | steps | s | Rel plain | Rel chat | Gen plain | Gen chat | fluency x |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in summary.items():
        lines.append(
            f"| {name} | {100 * s['took']:.0f} | {s['steps']:.1f} | {s['seconds']:.2f} | {100 * s['rel_plain']:.0f} | "
            f"{100 * s['rel_chat']:.0f} | {100 * s['gen_plain']:.0f} | {100 * s['gen_chat']:.0f} | {s['fluency']:.2f} |"
        )
    (RESULTS / "refit_choice.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

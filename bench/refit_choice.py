"""Choose the refit's settings on validation records (ZsRE train[:6], CounterFact val[500:506]).

For each record: the editor's delta from the unedited weights, then a refit
with each candidate setting; then greedy answers to the prompt and to its
rephrasing, asked plainly and in the chat template, and the fluency of a
40-token continuation. Writes bench/results/refit_choice.{json,md}.

    python bench/refit_choice.py
"""

from __future__ import annotations

import json
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
CANDIDATES = {  # name: (start from the editor's delta?, settings)
    "editor delta + rank 8, lr 1e-2": (True, RefitConfig(lr=1e-2, rank=8, steps=60)),
    "from zero, rank 8, lr 1e-2": (False, RefitConfig(lr=1e-2, rank=8, steps=60)),
    "editor delta + rank 8, lr 3e-2": (True, RefitConfig(lr=3e-2, rank=8, steps=60)),
}
COLUMNS = ("took", "steps", "seconds", "rel_plain", "rel_chat", "gen_plain", "gen_chat", "fluency")


def main() -> None:
    torch.set_num_threads(1)
    model, tok = load_model("smollm2-135m")
    editor = load_editor(SHIPPED, model)
    base = base_weights(model, editor.spec.edit_params)
    records = load_task_split("zsre", "train")[:6] + load_task_split("counterfact", "val")[500:506]
    rows: dict[str, list[list[float]]] = {}
    for r in records:
        load_weights(model, base)
        delta = editor.compute_delta(model, tok, [r])
        for name, (from_editor, cfg) in CANDIDATES.items():
            t = time.perf_counter()
            out = refit(model, tok, editor.spec, r.prompt, r.target_new, delta if from_editor else None, cfg)
            seconds = time.perf_counter() - t
            load_weights(model, materialize(base, [out.delta]))
            asked = [r.prompt, chat_prompt(tok, r.prompt), r.rephrase_prompts[0], chat_prompt(tok, r.rephrase_prompts[0])]
            said = metrics.generate_answers(model, tok, asked)
            flu = metrics.fluency(model, tok, [r.prompt], max_new_tokens=40)[0]
            load_weights(model, base)
            rows.setdefault(name, []).append(
                [float(out.took), out.steps, seconds, *(metrics.answer_exact(s, r.target_new) for s in said), flu]
            )
    summary = {name: dict(zip(COLUMNS, (sum(c) / len(c) for c in zip(*vals)))) for name, vals in rows.items()}
    (RESULTS / "refit_choice.json").write_text(json.dumps({"n_records": len(records), "candidates": summary}, indent=1) + "\n")
    lines = [
        "| refit | took % | steps | s | Rel plain | Rel chat | Gen plain | Gen chat | fluency (bits) |",
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

"""How often the unedited model answers a held-back rephrasing as it answers the question itself:
the figure the lifelong bench's Generalization asks of an edit, asked of facts the model already has.

    python bench/base_consistency.py [--n 1000] [--splits val,test] [--threads 2]

An edit scores on Generalization when the greedy answer to its first held-back rephrasing is the
target, and the default's answer to the question itself is the target at every N (its Reliability
is 100). The same question of the unedited model, on the same records (`lifelong.lifelong_records`)
and with the same generation (`metrics.generate_answers`), plain and inside the chat template:
* "known": the question's answer is the record's true answer (ZsRE's ground truth, CounterFact's
  true object), by the lifelong bench's exact match of the answer cut at "." or a line break
  (`metrics.answer_exact`), or by its looser "contains" on the whole answer (`metrics.answer_contains`;
  the unedited model often answers in a sentence); of those, the share whose rephrasing's answer is
  the true answer too, by the same rule;
* "same answer": of every record whose question gets a non-empty cut answer, the share whose
  rephrasing gets the same cut answer (normalized), right or wrong.

No edit and no choice is made from it: it says what the benchmark's rephrasings ask of a model of
this size, beside docs/RESULTS.md's Generalization figures. Writes bench/results/base_consistency.{json,md}
(the splits of this run only: a later run with other --splits replaces them). The answers themselves
are kept in runs/ and read again by a later run of the same model, split and n.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from editor_core import metrics
from editor_core.chat import chat_prompt
from editor_core.lifelong import lifelong_records
from editor_core.models import load_model

RESULTS = Path(__file__).resolve().parent / "results"
RUNS = Path(__file__).resolve().parents[1] / "runs"
TASKS = {"zsre": "ZsRE", "counterfact": "CounterFact"}


def share(hits: list[bool]) -> dict:
    return {"n": len(hits), "pct": round(100 * sum(hits) / len(hits), 1) if hits else None}


def pct(x: dict) -> str:
    return "-" if x["pct"] is None else str(x["pct"])


def answers(model, tok, records, fmt: str) -> dict:
    """The unedited model's greedy answers to each record's question and first rephrasing, in `fmt`."""
    ask = (lambda q: q) if fmt == "plain" else (lambda q: chat_prompt(tok, q))
    return {
        "question": metrics.generate_answers(model, tok, [ask(r.prompt) for r in records]),
        "rephrasing": metrics.generate_answers(model, tok, [ask(r.rephrase_prompts[0]) for r in records]),
    }


def scores(records, got: dict) -> dict:
    first, second = got["question"], got["rephrasing"]

    def right(text: str, r, rule) -> bool:
        return bool(r.ground_truth) and bool(rule(text, r.ground_truth))

    def said(text: str) -> str:
        return metrics.normalize_answer(metrics.cut_answer(text))

    out = {}
    for task, name in [*TASKS.items(), ("all", "all")]:
        idx = [i for i, r in enumerate(records) if task in ("all", r.task)]
        out[name] = {"records": len(idx), "same_answer": share([said(second[i]) == said(first[i]) for i in idx if said(first[i])])}
        for rule_name, rule in (("exact", metrics.answer_exact), ("contains", metrics.answer_contains)):
            known = [i for i in idx if right(first[i], records[i], rule)]
            out[name][rule_name] = {
                "question_right": share([right(first[i], records[i], rule) for i in idx]),
                "known_rephrasing_right": share([right(second[i], records[i], rule) for i in known]),
            }
    examples = [
        {"question": r.prompt, "answer": first[i], "rephrasing": r.rephrase_prompts[0], "its answer": second[i], "true": r.ground_truth}
        for i, r in enumerate(records)
        if right(first[i], r, metrics.answer_contains) and not right(second[i], r, metrics.answer_contains)
    ][:8]
    return {"by_task": out, "examples": examples}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1000, help="records of each split (the lifelong bench's first n)")
    ap.add_argument("--splits", default="val,test")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, tok = load_model(args.model)
    res = {"model": args.model, "n": args.n, "splits": {}}
    for split in args.splits.split(","):
        records = lifelong_records(split, args.n)
        # the answers themselves are kept (runs/, not the repo), so a rule can be scored again without generating
        saved = RUNS / f"base_consistency_{args.model.replace('/', '_')}_{split}_{args.n}.json"
        got = json.loads(saved.read_text()) if saved.exists() else {}
        for fmt in ("plain", "chat"):
            if fmt not in got:
                got[fmt] = answers(model, tok, records, fmt)
                saved.parent.mkdir(parents=True, exist_ok=True)
                saved.write_text(json.dumps(got))
        res["splits"][split] = {fmt: scores(records, got[fmt]) for fmt in ("plain", "chat")}
        print(split, json.dumps({f: v["by_task"]["all"] for f, v in res["splits"][split].items()}), flush=True)
    (RESULTS / "base_consistency.json").write_text(json.dumps(res, indent=1) + "\n")
    lines = [
        f"# The unedited model's own consistency on the lifelong records ({args.model}, the first {args.n} of each split)",
        "",
        "Plain / chat template, greedy answers. *question right*: the question's answer is the record's true answer (exact",
        'match of the answer cut at the first "." or line break, or the whole answer contains it); *rephrasing too*: of',
        "those, the first held-back rephrasing's answer is too, by the same rule (what Generalization asks of an edit);",
        "*same answer*: the rephrasing's cut answer equals the question's, right or wrong (of the questions answered at all).",
        "",
        "| split | task | records | question right, exact | rephrasing too, exact (n) | question right, contains "
        "| rephrasing too, contains (n) | same answer (n) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for split, fmts in res["splits"].items():
        for name in [*TASKS.values(), "all"]:
            p, c = fmts["plain"]["by_task"][name], fmts["chat"]["by_task"][name]
            cells = [split, name, str(p["records"])]
            for rule in ("exact", "contains"):
                cells.append(f"{pct(p[rule]['question_right'])} / {pct(c[rule]['question_right'])}")
                kp, kc = p[rule]["known_rephrasing_right"], c[rule]["known_rephrasing_right"]
                cells.append(f"{pct(kp)} / {pct(kc)} ({kp['n']} / {kc['n']})")
            sp, sc = p["same_answer"], c["same_answer"]
            cells.append(f"{pct(sp)} / {pct(sc)} ({sp['n']} / {sc['n']})")
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Reproduce: `python bench/base_consistency.py --n {args.n} --splits {args.splits}`."]
    (RESULTS / "base_consistency.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

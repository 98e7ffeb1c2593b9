"""How many of the lifelong bench's CounterFact rephrasings are, word for word, wordings the training split already has.

    python bench/rephrase_templates.py [--n 1000]

CounterFact's questions and rephrasings are written from a fixed set of wordings per relation, with the
subject put in ("The mother tongue of {} is", "Where {} is from, people speak the language of"). With
the subject replaced by "{}", a record's question and its first rephrasing become such wordings. For
the CounterFact records among the lifelong bench's first `n` (`lifelong.lifelong_records`, val and
test), this counts how often the rephrasing's wording is one that CounterFact's training split
(`data.load_task_split("counterfact", "train")`, the shipped editor's training data) uses as a
rephrasing somewhere, and how often it is one the training split pairs with the same question wording.

The counts are a lower bound: a rephrasing behind an unrelated sentence ("One person killed. {} plays")
counts only where that whole text is a training rephrasing.

No edit and no choice is made from it. It says why no wording table is used by the refit: one built
from the training split would hold the held-back rephrasing itself among its wordings for most of
these records, and fitted on them, Generalization would stop measuring generalization (docs/RESULTS.md). Writes
bench/results/rephrase_templates.{json,md}.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from editor_core.data import load_task_split
from editor_core.lifelong import lifelong_records

RESULTS = Path(__file__).resolve().parent / "results"


def wording(text: str, subject: str) -> str | None:
    """`text` with its subject replaced by "{}" (None where the subject is not in it word for word)."""
    return text.replace(subject, "{}") if subject and subject in text else None


def table(records) -> dict[str, set[str]]:
    """question wording -> the rephrasing wordings the records pair with it."""
    out: dict[str, set[str]] = defaultdict(set)
    for r in records:
        q = wording(r.prompt, r.subject)
        for p in r.rephrase_prompts:
            if q and (w := wording(p, r.subject)):
                out[q].add(w)
    return out


def count(records, seen: dict[str, set[str]]) -> dict:
    every = set().union(*seen.values())
    cf = [r for r in records if r.task == "counterfact"]
    pairs = [(wording(r.prompt, r.subject), wording(r.rephrase_prompts[0], r.subject)) for r in cf]
    known = sum(1 for q, p in pairs if q in seen)
    anywhere = sum(1 for _, p in pairs if p in every)
    paired = sum(1 for q, p in pairs if q in seen and p in seen[q])
    return {
        "counterfact_records": len(cf),
        "question_wording_in_train": known,
        "rephrasing_wording_in_train": anywhere,
        "rephrasing_wording_paired_with_the_same_question_in_train": paired,
        "pct_rephrasing_in_train": round(100 * anywhere / len(cf), 1) if cf else None,
        "pct_paired": round(100 * paired / len(cf), 1) if cf else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    args = ap.parse_args()
    seen = table(load_task_split("counterfact", "train"))
    res = {"n": args.n, "train_question_wordings": len(seen), "splits": {}}
    for split in ("val", "test"):
        res["splits"][split] = count(lifelong_records(split, args.n), seen)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "rephrase_templates.json").write_text(json.dumps(res, indent=1) + "\n")
    lines = [
        f"# CounterFact rephrasings of the lifelong bench's first {args.n} records whose wording the training split has",
        "",
        f"Training split: {res['train_question_wordings']} question wordings. `bench/rephrase_templates.py`.",
        "",
        "| split | CounterFact records | question wording in train | rephrasing wording in train | paired with that question in train |",
        "|---|---|---|---|---|",
    ]
    for split, c in res["splits"].items():
        paired = c["rephrasing_wording_paired_with_the_same_question_in_train"]
        lines.append(
            f"| {split} | {c['counterfact_records']} | {c['question_wording_in_train']} | {c['rephrasing_wording_in_train']}"
            f" ({c['pct_rephrasing_in_train']} %) | {paired} ({c['pct_paired']} %) |"
        )
    (RESULTS / "rephrase_templates.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

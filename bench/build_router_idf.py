"""Build the router's word-frequency table (editor_core/artifacts/router-idf.json).

The reference questions are training records only: every prompt, rephrasing
and locality prompt of CounterFact train, WikiData-Recent train and ZsRE train
records 400..899. ZsRE train 0..399 and ZsRE val are the lifelong validation
records (bench/lifelong.py --split val), and the test splits are what we
report, so none of them is in the table.

    python bench/build_router_idf.py
"""

from __future__ import annotations

import argparse

from editor_core.data.splits import load_task_split
from editor_core.routing import ARTIFACT, IdfTable

ZSRE_VALIDATION_PART = 400  # zsre train records [0, 400) are lifelong validation


def reference_questions() -> list[str]:
    records = load_task_split("counterfact", "train") + load_task_split("wikirecent", "train")
    records += load_task_split("zsre", "train")[ZSRE_VALIDATION_PART:]
    out = []
    for r in records:
        out += [r.prompt, *r.rephrase_prompts, *(p.prompt for p in r.locality)]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ARTIFACT))
    args = ap.parse_args()
    texts = reference_questions()
    table = IdfTable.build(texts)
    table.save(args.out, source="counterfact train + wikirecent train + zsre train[400:]: prompts, rephrasings, locality prompts")
    print(f"{args.out}: {table.n_docs} questions, {len(table.df)} words with df >= 2")


if __name__ == "__main__":
    main()

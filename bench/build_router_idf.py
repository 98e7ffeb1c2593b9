"""Build the router's word tables: word frequencies (editor_core/artifacts/router-idf.json) and relation labels (router-relations.json).

The reference questions are training records only: every prompt, rephrasing
and locality prompt of CounterFact train, WikiData-Recent train and ZsRE train
records 400..899. ZsRE train 0..399 and ZsRE val are the lifelong validation
records (bench/lifelong.py --split val), and the test splits are what we
report, so none of them is in the table.

The relation labels come from WikiData-Recent train alone (the editor's training
records): each edit prompt and each of its questions about another relation of
the same subject (KnowEdit's Relation_Specificity prompts), less the subject.

    python bench/build_router_idf.py
"""

from __future__ import annotations

import argparse

from editor_core.data.splits import load_task_split
from editor_core.routing import ARTIFACT, RELATIONS_ARTIFACT, IdfTable, RelationTable

ZSRE_VALIDATION_PART = 400  # zsre train records [0, 400) are lifelong validation


def reference_questions() -> list[str]:
    records = load_task_split("counterfact", "train") + load_task_split("wikirecent", "train")
    records += load_task_split("zsre", "train")[ZSRE_VALIDATION_PART:]
    out = []
    for r in records:
        out += [r.prompt, *r.rephrase_prompts, *(p.prompt for p in r.locality)]
    return out


def relation_questions() -> list[tuple[str, str]]:
    """(question, subject): WikiData-Recent train prompts and their questions about another relation of the subject."""
    out = []
    for r in load_task_split("wikirecent", "train"):
        kinds = r.extra.get("locality_kinds", ())
        out += [(r.prompt, r.subject)] + [(p.prompt, r.subject) for p, kind in zip(r.locality, kinds) if kind == "Relation_Specificity"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ARTIFACT))
    ap.add_argument("--relations-out", default=str(RELATIONS_ARTIFACT))
    args = ap.parse_args()
    texts = reference_questions()
    table = IdfTable.build(texts)
    table.save(args.out, source="counterfact train + wikirecent train + zsre train[400:]: prompts, rephrasings, locality prompts")
    print(f"{args.out}: {table.n_docs} questions, {len(table.df)} words with df >= 2")
    labels = RelationTable.build(relation_questions())
    labels.save(args.relations_out, source="wikirecent train: prompts and Relation_Specificity prompts, less the subject")
    print(f"{args.relations_out}: {len(labels.labels)} relation labels")


if __name__ == "__main__":
    main()

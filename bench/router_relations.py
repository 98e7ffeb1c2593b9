"""The router's relation check on validation word sets: how many questions about another relation
of an edit's subject it refuses, and how many held-back rephrasings. No model needed; seconds.

    python bench/router_relations.py

Records: the first held-back rephrasing of each of 1,000 lifelong validation edits (ZsRE val and
train[:400], CounterFact val; `lifelong.lifelong_records("val")`) and the question about another
relation of the same subject of 300 "relval" edits (KnowEdit's wiki_counterfact). Each edit is held
alone, keyed on its prompt and subject, so that a refusal is the check's and not another edit's.

Rules, all on the question's relation words (`routing.relation_words`: less the subject and
`RELATION_GLUE`) against the shipped labels (`routing.default_relations`):
* shipped (`RoutedMemory` with `RouterConfig.relation_check`): every word of a label, and none of
  the key's own relation words;
* every word of a label, the key's own words left out of account;
* an idf-weighted cosine with some label that shares no word with the key's relation words, above
  the cosine with the key's own by a margin (0, 0.2, 0.3).

Writes bench/results/router_relations.{json,md}.
"""

from __future__ import annotations

import json
from pathlib import Path

from editor_core.delta import Delta
from editor_core.lifelong import lifelong_records, other_relations
from editor_core.routing import (
    Key,
    MemoryEntry,
    RoutedMemory,
    RouterConfig,
    default_idf,
    default_relations,
    key,
    relation_words,
    scope_of,
)

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    labels, idf, power = default_relations().labels, default_idf(), RouterConfig.power
    val = lifelong_records("val", 1000)
    rel = lifelong_records("relval", 300)
    asked = other_relations(rel)

    def cos(a: dict, b: dict) -> float:
        return sum(x * b.get(w, 0.0) for w, x in a.items())

    def refused(record, question: str, rule: str) -> bool:
        if rule == "shipped":
            entry = MemoryEntry("e0", Delta({}), scope_of(record.prompt, subject=record.subject))  # routing reads no tensor
            held = RoutedMemory([entry]).route(question).entry
            return held is None and RoutedMemory([entry], config=RouterConfig(relation_check=False)).route(question).entry is not None
        subject = Key(record.prompt, record.subject).required()
        own, mine = relation_words(record.prompt, subject), relation_words(question, subject)
        others = [label for label in labels if not label & own]
        if rule == "every word of a label":
            return any(label <= mine for label in others)
        margin = float(rule.rsplit(" ", 1)[1])
        q = key(mine, idf, power)
        return max((cos(q, key(label, idf, power)) for label in others), default=0.0) > cos(q, key(own, idf, power)) + margin

    sets = {
        "relval: another relation of the subject": [(r, asked[r.prompt]) for r in rel],
        "ZsRE val rephrasings": [(r, r.rephrase_prompts[0]) for r in val if r.task == "zsre"],
        "CounterFact val rephrasings": [(r, r.rephrase_prompts[0]) for r in val if r.task != "zsre"],
    }
    rules = ["shipped", "every word of a label", "cosine margin 0", "cosine margin 0.2", "cosine margin 0.3"]
    rows = []
    for rule in rules:
        row = {"rule": rule}
        for name, pairs in sets.items():
            row[name] = round(100 * sum(refused(r, q, rule) for r, q in pairs) / len(pairs), 1)
        rows.append(row)
        print(row, flush=True)
    out = {"labels": len(labels), "n": {name: len(pairs) for name, pairs in sets.items()}, "rows": rows}
    (RESULTS / "router_relations.json").write_text(json.dumps(out, indent=1) + "\n")
    lines = [
        f"# The router's relation check on validation word sets ({len(labels)} labels): % refused",
        "",
        "| rule | " + " | ".join(f"{name} (n = {len(pairs)})" for name, pairs in sets.items()) + " |",
        "|---" * (len(sets) + 1) + "|",
    ]
    lines += ["| " + " | ".join([row["rule"], *(str(row[name]) for name in sets)]) + " |" for row in rows]
    lines += ["", "Reproduce: `python bench/router_relations.py`."]
    (RESULTS / "router_relations.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

"""Can the model's hidden state tell an edit's own question from another question about its subject?

    python bench/relation_gate.py --records 50 --threads 1

The word router (`editor_core.routing`) sends every question that names an edited
subject to that edit, so "What is the official language of Peru?" runs on the
edit "The capital of Peru is -> Quito" and may answer "Quito". This measures, on
validation records only and with the unedited model, a per-edit gate: the question's
last-token hidden state at one layer against the edit's own question forms (the prompt
and the refit's made variants: positives) and against questions about the same subject
and other relations or none (`refit.relation_questions`, `refit.SUBJECT_QUESTIONS`:
negatives), in the same format (plain or chat). The question passes when its nearest
positive is nearer than its nearest negative by `margin`.

Scored per layer and margin: held-back rephrasings that pass (ZsRE val, CounterFact val:
generalization kept), KnowEdit relation questions blocked ("relval": another relation
of the same subject), and the bench's own subject probes blocked (`metrics.SUBJECT_PROBES`,
never among the negatives). Writes bench/results/relation_gate.{json,md}.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from editor_core import metrics
from editor_core.chat import chat_prompt
from editor_core.lifelong import lifelong_records, other_relations
from editor_core.models import load_model
from editor_core.refit import SUBJECT_QUESTIONS, relation_questions, variants
from editor_core.routing import subject_of
from editor_core.tokens import encode_prompts

RESULTS = Path(__file__).resolve().parent / "results"


class Keys:
    """Last-token hidden states of texts at every layer, unit length, cached per text."""

    def __init__(self, model, tok, batch: int = 32):
        self.model, self.tok, self.batch, self.cache = model, tok, batch, {}

    @torch.no_grad()
    def __call__(self, texts: list[str]) -> torch.Tensor:  # (len(texts), layers, d)
        todo = [t for t in dict.fromkeys(texts) if t not in self.cache]
        for i in range(0, len(todo), self.batch):
            chunk = todo[i : i + self.batch]
            ids, mask = encode_prompts(self.tok, chunk)
            out = self.model(input_ids=ids, attention_mask=mask, output_hidden_states=True, use_cache=False)
            h = torch.stack(out.hidden_states[1:], dim=1)[:, :, -1].float()  # left-padded: the last token is last
            h = torch.nn.functional.normalize(h, dim=-1)
            for t, k in zip(chunk, h):
                self.cache[t] = k
        return torch.stack([self.cache[t] for t in texts])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=50, help="of each set (val, relval)")
    ap.add_argument("--relations", type=int, default=8, help="relation questions among an edit's negatives")
    ap.add_argument("--variants", type=int, default=4)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--gate", choices=("hidden", "answer"), default="hidden")
    ap.add_argument("--out", type=Path, default=None, help="default: bench/results/relation_gate[_answer].json")
    args = ap.parse_args(argv)
    args.out = args.out or RESULTS / ("relation_gate.json" if args.gate == "hidden" else "relation_gate_answer.json")
    torch.set_num_threads(args.threads)
    model, tok = load_model(args.model)
    keys = Keys(model, tok)
    margins = (-0.02, 0.0, 0.02, 0.05)

    def gap(record, question: str, fmt: str) -> torch.Tensor:
        """Per layer: nearest positive's cosine minus nearest negative's, in one format."""
        ask = (lambda q: q) if fmt == "plain" else (lambda q: chat_prompt(tok, q))
        subject = subject_of(record.prompt, record.subject)
        pos = [record.prompt, *variants(record.prompt, args.variants)]
        neg = relation_questions(record.prompt, subject, args.relations) + [q.format(subject) for q in SUBJECT_QUESTIONS]
        q = keys([ask(question)])[0]  # (layers, d)
        p, n = keys([ask(x) for x in pos]), keys([ask(x) for x in neg])
        return torch.einsum("ld,kld->kl", q, p).max(0).values - torch.einsum("ld,kld->kl", q, n).max(0).values

    val = lifelong_records("val", args.records)
    relval = lifelong_records("relval", args.records)
    relation = other_relations(relval)
    probes = {"rephrasing": [], "relation": [], "subject": []}  # (record, question)
    for i, r in enumerate(val):
        probes["rephrasing"].append((r, r.rephrase_prompts[0]))
        if subject := subject_of(r.prompt, r.subject):
            probes["subject"].append((r, metrics.subject_probes(subject)[i % len(metrics.SUBJECT_PROBES)]))
    probes["relation"] = [(r, relation[r.prompt]) for r in relval]

    if args.gate == "answer":
        answer_gate(model, tok, probes, args)
        return
    gaps = {f"{kind}/{fmt}": torch.stack([gap(r, q, fmt) for r, q in rows]) for kind, rows in probes.items() for fmt in ("plain", "chat")}
    layers = next(iter(gaps.values())).shape[1]
    rows = []
    for layer in range(layers):
        for m in margins:
            row = {"layer": layer + 1, "margin": m}
            for name, g in gaps.items():
                passed = (g[:, layer] > m).float().mean().item() * 100
                row[name] = passed if name.startswith("rephrasing") else 100 - passed
            rows.append(row)
    meta = {"model": args.model, "records": args.records, "relations": args.relations}
    args.out.write_text(json.dumps({**meta, "rows": rows}, indent=1) + "\n")

    def worst(r: dict) -> float:  # a gate is as good as its weaker format, on both sides
        return min(r["rephrasing/plain"], r["rephrasing/chat"]) + min(r["relation/plain"], r["relation/chat"])

    best = sorted(rows, key=worst, reverse=True)[:12]
    lines = [
        f"# A hidden-state gate per edit, {args.model}: {args.records} validation records of each set, "
        f"{args.relations} relation questions among the negatives; the 12 best layer / margin pairs",
        "",
        "| layer | margin | rephrasings pass plain / chat | relation questions blocked plain / chat "
        "| subject probes blocked plain / chat |",
        "|---|---|---|---|---|",
    ]
    for r in best:
        lines.append(
            f"| {r['layer']} | {r['margin']} | {r['rephrasing/plain']:.0f} / {r['rephrasing/chat']:.0f} | "
            f"{r['relation/plain']:.0f} / {r['relation/chat']:.0f} | {r['subject/plain']:.0f} / {r['subject/chat']:.0f} |"
        )
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def answer_gate(model, tok, probes: dict, args) -> None:
    """The other gate: a question passes when the unedited model answers it as it answers the
    edit's prompt (the same greedy answer, cut at "." or newline, normalized; same format),
    that is, when it asks for the same fact. Scored as the hidden-state gate is."""
    row = {}
    for fmt in ("plain", "chat"):
        ask = (lambda q: q) if fmt == "plain" else (lambda q: chat_prompt(tok, q))
        for kind, pairs in probes.items():
            texts = [ask(x) for r, q in pairs for x in (r.prompt, q)]
            said = metrics.generate_answers(model, tok, texts, max_new_tokens=16)
            said = [metrics.normalize_answer(metrics.cut_answer(a)) for a in said]
            same = [a == b for a, b in zip(said[::2], said[1::2])]  # two empty answers pass: the gate cannot tell
            passed = 100.0 * sum(same) / len(same)
            row[f"{kind}/{fmt}"] = passed if kind == "rephrasing" else 100.0 - passed
    args.out.write_text(json.dumps({"model": args.model, "records": args.records, "gate": "answer", **row}, indent=1) + "\n")
    lines = [
        f"# A gate on the unedited model's answers, {args.model}: {args.records} validation records of each set",
        "",
        "| rephrasings pass plain / chat | relation questions blocked plain / chat | subject probes blocked plain / chat |",
        "|---|---|---|",
        f"| {row['rephrasing/plain']:.0f} / {row['rephrasing/chat']:.0f} | {row['relation/plain']:.0f} / {row['relation/chat']:.0f} "
        f"| {row['subject/plain']:.0f} / {row['subject/chat']:.0f} |",
    ]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

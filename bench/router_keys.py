"""Lexical routing keys (idf-weighted word cosine) on 1,000 validation records: top-1
retrieval of held-back rephrasings, and recall at thresholds set by how often unrelated
locality prompts fire. No model needed; a few seconds. The numbers behind
editor_core/routing.py (docs/RESULTS.md).

    python bench/router_keys.py
"""

import collections
import math
import re

from editor_core.data.splits import load_task_split

z = load_task_split("zsre", "val") + load_task_split("zsre", "train")[:400]
c = load_task_split("counterfact", "val")[:500]
recs = z + c
# reference corpus for df: training prompts (not these records)
ref = [r.prompt for r in load_task_split("counterfact", "train")] + [r.prompt for r in load_task_split("zsre", "train")[400:]]
WORD = re.compile(r"\w+", re.U)


def words(t):
    return [w for w in WORD.findall(t.lower())]


df = collections.Counter()
for t in ref:
    df.update(set(words(t)))
NREF = len(ref)


def idf(w):
    return math.log((NREF + 1) / (df.get(w, 0) + 1))


def vec(t):
    c = collections.Counter(words(t))
    v = {w: idf(w) for w in c}  # binary tf
    n = math.sqrt(sum(x * x for x in v.values())) or 1
    return {w: x / n for w, x in v.items()}


def cos(a, b):
    return sum(x * b.get(w, 0) for w, x in a.items())


P = [vec(r.prompt) for r in recs]
reph = [(i, r.rephrase_prompts[0]) for i, r in enumerate(recs) if r.rephrase_prompts]
loc = [(i, r.locality[0].prompt) for i, r in enumerate(recs) if r.locality]
# inverted index for speed
inv = collections.defaultdict(list)
for j, p in enumerate(P):
    for w, x in p.items():
        inv[w].append((j, x))


def sims(q):
    s = collections.defaultdict(float)
    for w, x in q.items():
        for j, y in inv.get(w, ()):
            s[j] += x * y
    return s


def best(q):
    s = sims(vec(q))
    if not s:
        return None, 0.0
    j = max(s, key=lambda k: (s[k], k))
    return j, s[j]


R = [(i, *best(t)) for i, t in reph]
L = [(i, *best(t)) for i, t in loc]
top1 = sum(j == i for i, j, _ in R) / len(R)
print("lexical tfidf top1", top1)
ls = sorted(s for _, _, s in L)
for q in (0.9, 0.95, 0.98, 0.99, 0.995, 1.0):
    th = ls[min(len(ls) - 1, int(q * len(ls)))]
    rec = sum(j == i and s > th for i, j, s in R) / len(R)
    print(f"loc q{q} th {th:.3f} recall {rec:.3f}")
for th in (0.2, 0.25, 0.3, 0.35, 0.4, 0.5):
    fp = sum(s >= th for _, _, s in L) / len(L)
    rec = sum(j == i and s >= th for i, j, s in R) / len(R)
    print(f"th {th}: loc fire {fp:.3f}  reph recall {rec:.3f}")
# failures
bad = [(recs[i].prompt, t, recs[j].prompt if j is not None else None, round(s, 2)) for (i, j, s), (_, t) in zip(R, reph) if j != i][:12]
for b in bad:
    print(b)
hi = sorted([(s, recs[j].prompt, t) for (i, j, s), (_, t) in zip(L, loc)], reverse=True)[:10]
for h in hi:
    print(h)
print("---- variants")


def run(name, vecf, score):
    P2 = [vecf(r.prompt) for r in recs]

    def best2(t):
        q = vecf(t)
        bs, bj = 0.0, None
        for j, p in enumerate(P2):
            s = score(q, p)
            if s > bs or (s == bs and bj is not None and j > bj):
                bs, bj = s, j
        return bj, bs

    R2 = [(i, *best2(t)) for i, t in reph[::3]]
    L2 = [(i, *best2(t)) for i, t in loc[::3]]
    top1 = sum(j == i for i, j, _ in R2) / len(R2)
    out = [name, f"top1 {top1:.3f}"]
    for fpt in (0.01, 0.02, 0.05):
        ls = sorted(s for _, _, s in L2)
        th = ls[int((1 - fpt) * len(ls))]
        rec = sum(j == i and s > th for i, j, s in R2) / len(R2)
        out.append(f"fire{fpt}: th {th:.2f} rec {rec:.3f}")
    print(" | ".join(out))


def vecp(t, p):
    c = set(words(t))
    v = {w: idf(w) ** p for w in c}
    n = math.sqrt(sum(x * x for x in v.values())) or 1
    return {w: x / n for w, x in v.items()}


for p in (1, 1.5, 2, 3):
    run(f"cos idf^{p}", lambda t, p=p: vecp(t, p), cos)


def raw(t):
    return {w: idf(w) for w in set(words(t))}


def cover(q, e):  # fraction of the edit's idf^2 mass found in the query
    tot = sum(x * x for x in e.values()) or 1
    return sum(x * x for w, x in e.items() if w in q) / tot


run("cover edit", raw, cover)
run("min(cover both)", raw, lambda q, e: min(cover(q, e), cover(e, q)))
run("sqrt(cov*cov)", raw, lambda q, e: math.sqrt(cover(q, e) * cover(e, q)))


# ---- the router as shipped (editor_core.routing), with and without its subject check,
# on the lifelong bench's 1,000 validation edits: written to bench/results/router_subject.{json,md}
import json  # noqa: E402
from pathlib import Path  # noqa: E402

from editor_core.lifelong import capability_questions, lifelong_records  # noqa: E402
from editor_core.routing import Key, MemoryEntry, RoutedMemory, RouterConfig  # noqa: E402
from editor_core.routing import words as key_words  # noqa: E402


def subject_check(split="val", n=1000):
    recs = lifelong_records(split, n)
    reph = [(i, r.rephrase_prompts[0]) for i, r in enumerate(recs)]
    loc = [(i, r.locality[0].prompt) for i, r in enumerate(recs)]
    cap = capability_questions()

    def names(q, r):  # the question names the edited record's subject (a same-subject collision, not an unrelated prompt)
        return key_words(r.subject) <= key_words(q)

    # questions about an edited subject that ask something else (written for this; the data has no such probes)
    other = ["Tell me about {}.", "What do you know about {}?", "Describe {} in one sentence.", "Write a short poem about {}."]
    about = [(i, t.format(r.subject)) for i, r in enumerate(recs) for t in other]
    rows = []
    for check, subject_of in (("none", None), ("guessed subject", lambda r: ""), ("given subject", lambda r: r.subject)):
        for th in (0.3, 0.35, 0.44):
            mem = RoutedMemory(config=RouterConfig(threshold=th, subject_check=subject_of is not None))
            for i, r in enumerate(recs):
                mem.append(MemoryEntry(str(i), None, (Key(r.prompt, subject_of(r) if subject_of else ""),)))
            home = sum(mem.route(q).index == i for i, q in reph)
            fired = [(q, j) for _, q in loc if (j := mem.route(q).index) >= 0]
            rows.append({
                "check": check,
                "threshold": th,
                "rephrasings_home": 100 * home / len(reph),
                "unrelated_fire": 100 * len(fired) / len(loc),
                "unrelated_fire_not_naming_subject": 100 * sum(not names(q, recs[j]) for q, j in fired) / len(loc),
                "capability_fire": sum(mem.route(q).index >= 0 for q in cap),
                "other_question_same_subject_routed": 100 * sum(mem.route(q).index == i for i, q in about) / len(about),
            })
    out = Path(__file__).parent / "results"
    doc = {"split": split, "n_edits": n, "n_capability": len(cap), "rows": rows}
    (out / "router_subject.json").write_text(json.dumps(doc, indent=1) + "\n")
    md = [
        "| check | threshold | rephrasings home % | unrelated fire % | of which not naming an edited subject % | capability fired "
        "| another question about the subject routed % |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        md.append(
            f"| {r['check']} | {r['threshold']} | {r['rephrasings_home']:.1f} | {r['unrelated_fire']:.1f} "
            f"| {r['unrelated_fire_not_naming_subject']:.1f} | {r['capability_fire']}/{len(cap)} "
            f"| {r['other_question_same_subject_routed']:.1f} |"
        )
    (out / "router_subject.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


subject_check()

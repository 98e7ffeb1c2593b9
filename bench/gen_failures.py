"""What the lifelong bench's answers to held-back rephrasings are, where Generalization counts them wrong.

    python bench/lifelong.py --split val ... --answers runs/answers.jsonl
    python bench/gen_failures.py runs/answers.jsonl --name val-default [--method M --n N]

Generalization (`editor_core.lifelong.measure`) is the SQuAD-normalized exact match of the answer cut at
its first "." or line break. Each answer to an edit's held-back rephrasing falls in one of:

- exact: the cut answer is the target;
- target, then more: the cut answer begins with the target and goes on ("Rome, Italy", "football player");
- nothing: the cut answer is empty (the model stopped or broke the line at once);
- target inside: the answer names the target later ("He was a football player");
- other: none of these.

Counted per task and prompt format, with a few examples of each kind, into
bench/results/gen_failures.{json,md} under `--name` (one entry per name; a new run replaces its own).
Nothing here is scored again: the answers are the bench's own.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter, defaultdict
from pathlib import Path

from editor_core.metrics import answer_contains, answer_exact, cut_answer, exact_match, normalize_answer

RESULTS = Path(__file__).resolve().parent / "results"
KINDS = ("exact", "target, then more", "nothing", "target inside", "other")


def kind_of(answer: str, target: str) -> str:
    if answer_exact(answer, target):
        return "exact"
    if exact_match(cut_answer(answer), target):
        return "target, then more"
    if not normalize_answer(cut_answer(answer)):
        return "nothing"
    if answer_contains(answer, target):
        return "target inside"
    return "other"


def tally(rows: list[dict], examples: int = 4) -> dict:
    """{format: {task: {"n", "counts", "examples"}}} over the rephrasing rows ("gen")."""
    out: dict = {}
    for fmt in ("plain", "chat"):
        counts: dict[str, Counter] = defaultdict(Counter)
        seen: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
        for r in rows:
            k = kind_of(r[fmt], r["target"])
            for task in (r["task"], "all"):
                counts[task][k] += 1
                if task != "all" and k != "exact" and len(seen[task][k]) < examples:
                    seen[task][k].append({"question": r["question"], "target": r["target"], "answer": r[fmt]})
        out[fmt] = {
            task: {"n": sum(c.values()), "counts": {k: c[k] for k in KINDS}, "examples": dict(seen.get(task, {}))}
            for task, c in sorted(counts.items())
        }
    return out


def write_md(done: dict, path: Path) -> None:
    lines = [
        "# Answers to held-back rephrasings, by kind (bench/gen_failures.py; % of each task's rephrasings)",
        "",
        "| run | format | task | n | " + " | ".join(KINDS) + " |",
        "|---|---|---|---|" + "---|" * len(KINDS),
    ]
    for name, entry in done.items():
        for fmt in ("plain", "chat"):
            for task, t in entry["tally"][fmt].items():
                share = [f"{100 * t['counts'][k] / t['n']:.1f}" for k in KINDS]
                lines.append(f"| {name} | {fmt} | {task} | {t['n']} | " + " | ".join(share) + " |")
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("answers", type=Path, help="a JSON-lines file from bench/lifelong.py --answers")
    ap.add_argument("--name", required=True, help="this run's name in the results file")
    ap.add_argument("--method", default=None, help="only this method's rows (default: the file must hold one)")
    ap.add_argument("--n", type=int, default=None, help="only this N's rows (default: the file must hold one)")
    ap.add_argument("--out", type=Path, default=RESULTS / "gen_failures.json")
    args = ap.parse_args(argv)
    rows = [json.loads(line) for line in args.answers.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r["kind"] == "gen" and (args.method is None or r["method"] == args.method)]
    rows = [r for r in rows if args.n is None or r["n_edits"] == args.n]
    runs = {(r["method"], r["n_edits"], r["split"]) for r in rows}
    if len(runs) != 1:
        ap.error(f"{args.answers}: {len(runs)} (method, N, split) runs in the rows chosen; pick one with --method and --n: {sorted(runs)}")
    ((method, n, split),) = runs
    done = json.loads(args.out.read_text()) if args.out.exists() else {}
    done[args.name] = {"method": method, "n_edits": n, "split": split, "tally": tally(rows)}
    args.out.write_text(json.dumps(done, indent=1) + "\n")
    write_md(done, args.out.with_suffix(".md"))
    for fmt in ("plain", "chat"):
        for task, t in done[args.name]["tally"][fmt].items():
            print(fmt, task, t["n"], {k: v for k, v in t["counts"].items()})


if __name__ == "__main__":
    main()

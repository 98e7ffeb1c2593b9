"""Lifelong editing judged by generation: N edits held at once, all measured at the end.

    python bench/lifelong.py --split val --methods instructedit/routed+refit --checkpoints 10,100   # choose settings here
    python bench/lifelong.py --split test                                                    # what we report

Records: ZsRE and CounterFact, alternating, one edit per subject (the ZsRE
files repeat subjects with other answers; we keep the first record of each
subject, so no edit contradicts an earlier one). `--split val` uses ZsRE val +
ZsRE train[:400] and CounterFact val; `--split test` uses the ZsRE hold-out
file and CounterFact test. The editor never trained on ZsRE, and the router's
word table (bench/build_router_idf.py) holds neither set. `--split relval` uses
KnowEdit's wiki_counterfact train_cf records, each with a question about another
relation of its subject (no rephrasings): where settings touching such questions
are chosen. val and relval rows go to lifelong_val.json.

Each (method, N) row is appended to `--out` as soon as it is measured, and a
run skips rows already there, so a cut-off run resumes where it stopped.
Also writes the markdown table and a PNG of every figure against N.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import torch

from editor_core import lifelong
from editor_core.editors import load_editor
from editor_core.editors.ftl import FTL
from editor_core.editors.locft import LocFT
from editor_core.lifelong import capability_questions
from editor_core.lifelong import lifelong_records as edit_records
from editor_core.models import load_model
from editor_core.refit import QUICK, SUBJECT_QUESTIONS, RefitConfig
from editor_core.routing import RouterConfig

SHIPPED = Path(__file__).resolve().parents[1] / "editor_core" / "artifacts" / "smollm2-135m" / "instructedit.safetensors"
RESULTS = Path(__file__).resolve().parent / "results"
# Part of the cache's name beside the refit's settings and its kept subject questions' texts: raise it
# when the refit's code changes what a setting computes (2: `keep` reads the whole vocabulary, session
# 13; 3: no bare "{} is" among the kept subject questions, session 14, before their texts were part of
# the name), so no older edit is reused. A new RefitConfig field renames every cache too (session 18:
# `tie_margin`, `subject_stop`; session 19: `narrow_scope`; session 20: `variant_drops`; session 22: `subject_plain_stop`),
# even at its default: older cached edits
# are then computed again.
REFIT_CODE = 3
METHODS = (
    *("instructedit/summed", "ft-l/summed", "locft-bf/all", "instructedit/routed"),
    *("instructedit/routed+quick", "instructedit/routed+refit", "refit-only/routed"),
)


def refit_of(name: str, refit_cfg: RefitConfig, quick_cfg: RefitConfig = QUICK) -> RefitConfig | None:
    """The refit a method runs: "+refit", the full refit (`refit_cfg`), what the service ends with; "+quick", the service's
    instant stage alone (`quick_cfg`, `refit.QUICK` unless --quick), what a user meets before the full refit lands."""
    editor_name, holding = name.split("/")
    if "+refit" in holding or editor_name == "refit-only":
        return refit_cfg
    return quick_cfg if "+quick" in holding else None


def make_method(name: str, model, refit_cfg: RefitConfig, router: RouterConfig, quick_cfg: RefitConfig = QUICK) -> lifelong.Method:
    editor_name, holding = name.split("/")
    refit = refit_of(name, refit_cfg, quick_cfg)
    holding = holding.replace("+refit", "").replace("+quick", "")
    if editor_name == "instructedit":
        editor = load_editor(SHIPPED, model)
    elif editor_name == "ft-l":
        editor = FTL.for_model(model)
    elif editor_name == "locft-bf":
        editor = LocFT.for_model(model)
    elif editor_name == "refit-only":
        editor = None
    else:
        raise SystemExit(f"unknown editor in method {name!r}")
    return lifelong.Method(name, editor, holding, refit, router)


def key_of(row: dict) -> tuple:
    """What a row measured: (method, N, split, whether on a sample of the N edits). A run skips what is there,
    and a new row replaces the one with its key (a sampled N and the same N measured whole are two rows)."""
    return row["method"], row["n_edits"], row["extra"]["split"], bool(row["extra"].get("sample"))


def row_of(res: dict, fmt: str, model_name: str) -> dict:
    """One row of the results file's documented shape."""
    r = res[fmt]
    return {
        "method": res["method"],
        "n_edits": res["n_edits"],
        "prompt_format": fmt,
        "reliability": r["reliability"],
        "generalization": r["generalization"],
        "locality": r["locality"],
        "retention_first10pct": r["retention_first10pct"],
        "fluency_ratio": res["fluency_ratio"],
        "capability_delta": None if r["capability"] is None else r["capability"] - 100.0,
        "teacher_forced": res.get("teacher_forced"),
        "seconds_per_edit": res["seconds_per_edit"],
        "extra": {
            "split": res["split"],
            "reliability_contains": r["reliability_contains"],
            "generalization_contains": r["generalization_contains"],
            "subject_locality": r.get("subject_locality"),
            "subject_hijack": r.get("subject_hijack"),
            "subject_mentions": r.get("subject_mentions"),
            "relation_locality": r.get("relation_locality"),
            "relation_hijack": r.get("relation_hijack"),
            "relation_mentions": r.get("relation_mentions"),
            "perplexity_ratio": res["perplexity_ratio"],
            "norm_ratio_max": res["norm_ratio_max"],
            "seconds_instant": res["seconds_instant"],
            "refit_took": res["refit_took"],
            "refit_steps": res.get("refit_steps"),  # mean per edit
            "refit": res.get("refit"),
            "router": res.get("router"),
            "sample": res.get("sample"),  # measured on a sample of the N edits (lifelong.measure_sample), else None
            "locality_reached": res.get("locality_reached"),  # with a sample: the unrelated prompts, of all N, that reach an edit
            "examples": res["examples"] if fmt == "plain" else res.get("subject_examples"),
            **({"relation_examples": res.get("relation_examples")} if fmt == "chat" else {}),
        },
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", choices=("val", "test", "relval"), default="test")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--checkpoints", default="10,100,1000")
    ap.add_argument("--single", type=int, default=100, help="N=1 rows: this many records, each edited alone (0: skip)")
    ap.add_argument("--threshold", type=float, default=RouterConfig.threshold)
    ap.add_argument(
        "--narrow-threshold", type=float, default=RouterConfig.narrow_threshold, help="the router's for narrow (quick-fitted) edits"
    )
    ap.add_argument(
        "--relation-check",
        choices=("on", "off"),
        default="on" if RouterConfig.relation_check else "off",
        help="the router refuses an edit's questions about another relation of its subject (RouterConfig.relation_check)",
    )
    ap.add_argument("--refit-lr", type=float, default=RefitConfig.lr)
    ap.add_argument("--refit-steps", type=int, default=RefitConfig.steps)
    ap.add_argument(
        "--refit",
        nargs="*",
        default=[],
        metavar="FIELD=VALUE",
        help="other RefitConfig fields, e.g. --refit n_weights=1 keep=0 (to measure a setting other than the default)",
    )
    ap.add_argument(
        "--quick",
        nargs="*",
        default=[],
        metavar="FIELD=VALUE",
        help='RefitConfig fields of the quick fit that "+quick" methods run (default: refit.QUICK), e.g. --quick subject_tokens=1; '
        "rows keep the method's name, so give such a run its own --out",
    )
    ap.add_argument(
        "--fill",
        default=None,
        metavar="K/M",
        help="only compute the routed methods' edits of records K, K+M, K+2M, ... into --cache (run M of these at once, then the bench)",
    )
    ap.add_argument(
        "--sample",
        type=int,
        default=0,
        metavar="K",
        help="at each N above N/10 + K, measure the first tenth of the edits and K of the rest at random, computing only the "
        "deltas those measurements read (routed methods; lifelong.measure_sample). 0: every edit",
    )
    ap.add_argument("--sample-seed", type=int, default=0)
    ap.add_argument(
        "--locality-whole",
        action="store_true",
        help="only measure Locality over every edit's unrelated prompt (lifelong.locality_over_all, computing the deltas they "
        "reach) for the sampled rows of --checkpoints in --out, and write it into them (rows measured before session 22 "
        "took it from their sample)",
    )
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument(
        "--answers",
        type=Path,
        default=None,
        help="also append every measured edit's question and rephrasing, with its plain and chat answers, to this JSON-lines file",
    )
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--cache",
        type=Path,
        default=Path("runs/lifelong-cache"),
        help="routed edits are saved here per method and split, and reused by later runs",
    )
    ap.add_argument(
        "--merge",
        type=Path,
        nargs="*",
        default=[],
        help="only merge the rows of these results files (runs split over processes) into --out, then write the table",
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = args.out or RESULTS / ("lifelong.json" if args.split == "test" else "lifelong_val.json")
    checkpoints = sorted(int(x) for x in args.checkpoints.split(","))
    done = json.loads(out.read_text()) if out.exists() else {"model": args.model, "rows": []}
    if args.merge:
        for other in args.merge:
            rows = json.loads(other.read_text())["rows"]
            keys = {(*key_of(r), r["prompt_format"]) for r in rows}
            done["rows"] = [r for r in done["rows"] if (*key_of(r), r["prompt_format"]) not in keys] + rows
        out.write_text(json.dumps(done, indent=1) + "\n")
        write_table(done, out.with_suffix(".md"))
        plot(done, out.with_suffix(".png"))
        return
    have = {key_of(r) for r in done["rows"]}

    model, tok = load_model(args.model)
    records = edit_records(args.split, max(checkpoints + [args.single]))
    probes = lifelong.Probes(records, capability_questions(), relation=lifelong.other_relations(records))
    router = RouterConfig(threshold=args.threshold, narrow_threshold=args.narrow_threshold, relation_check=args.relation_check == "on")
    fields = [f.name for f in dataclasses.fields(RefitConfig)]

    def overrides(flag: str, items: list[str]) -> dict:
        out = {}
        for item in items:
            name, _, value = item.partition("=")
            if name not in fields:
                ap.error(f"{flag}: no RefitConfig field {name!r}; fields: {', '.join(fields)}")
            default = getattr(RefitConfig(), name)
            if isinstance(default, str):  # a word, unquoted: --refit variant_drops=glue
                out[name] = value
                continue
            parsed = json.loads(value.lower() if value.lower() in ("true", "false") else value)
            # as the field's own type, so that "4" and the default 4.0 name the same settings (and cache)
            out[name] = type(default)(parsed) if isinstance(default, (int, float)) else parsed
        return out

    # --refit lr=... or steps=... wins over --refit-lr and --refit-steps
    refit_cfg = dataclasses.replace(RefitConfig(), **({"lr": args.refit_lr, "steps": args.refit_steps} | overrides("--refit", args.refit)))
    quick_cfg = dataclasses.replace(QUICK, **overrides("--quick", args.quick))
    reference: dict = {}

    def refit_settings(cfg: RefitConfig) -> dict:
        """A refit's settings, with the texts of the subject questions it keeps (module constants)."""
        return {**dataclasses.asdict(cfg), "subject_question_texts": list(SUBJECT_QUESTIONS[: cfg.subject_questions])}

    def save(res: dict) -> None:
        res["split"] = args.split
        cfg = refit_of(res["method"], refit_cfg, quick_cfg)
        if cfg is not None:
            res["refit"] = refit_settings(cfg)
        if "/routed" in res["method"]:
            res["router"] = dataclasses.asdict(router)
        if out.exists():  # other benches (lifelong_speed.py, parallel runs of this one) may have written since
            done.clear()
            done.update(json.loads(out.read_text()))
        key = (res["method"], res["n_edits"], args.split, bool(res.get("sample")))
        done["rows"] = [r for r in done["rows"] if key_of(r) != key]
        done["rows"] += [row_of(res, fmt, args.model) for fmt in ("plain", "chat")]
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(done, indent=1) + "\n")
        tmp.replace(out)
        if args.answers and res.get("answers"):
            args.answers.parent.mkdir(parents=True, exist_ok=True)
            with args.answers.open("a") as f:
                for a in res["answers"]:
                    f.write(json.dumps({"method": res["method"], "n_edits": res["n_edits"], "split": args.split, **a}) + "\n")
        p, c = res["plain"], res["chat"]

        def f(x, spec="5.1f"):
            return "-" if x is None else format(x, spec)

        print(
            f"{res['method']:28s} N={res['n_edits']:5d}  plain rel {f(p['reliability'])} gen {f(p['generalization'])} "
            f"loc {f(p['locality'])} ret {f(p['retention_first10pct'])} | chat rel {f(c['reliability'])} "
            f"gen {f(c['generalization'])} loc {f(c['locality'])} | flu {f(res['fluency_ratio'], '.2f')} "
            f"cap {f(p['capability'])} subj {f(p.get('subject_locality'))}/{f(c.get('subject_locality'))} "
            f"hijack {f(p.get('subject_hijack'))}/{f(c.get('subject_hijack'))} "
            f"mentions {f(p.get('subject_mentions'))}/{f(c.get('subject_mentions'))} "
            f"relation {f(p.get('relation_locality'))}/{f(c.get('relation_locality'))} "
            f"relation hijack {f(p.get('relation_hijack'))}/{f(c.get('relation_hijack'))} s/edit {f(res['seconds_per_edit'], '.2f')}",
            flush=True,
        )

    def cache_of(name: str) -> Path:
        cfg = refit_of(name, refit_cfg, quick_cfg) or refit_cfg  # (a method without a refit is named by the default's settings, as before)
        named = {**refit_settings(cfg), "code": REFIT_CODE}
        settings = hashlib.sha256(json.dumps(named, sort_keys=True).encode()).hexdigest()[:10]
        return args.cache / args.split / f"{name.replace('/', '_')}-refit{settings}"

    if args.sample < 0:
        ap.error("--sample: a number of edits, 0 or more")

    def sampled(n: int, name: str) -> bool:  # only a routed memory answers a question from one edit's delta alone
        return bool(args.sample) and "/routed" in name and max(1, n // 10) + args.sample < n

    if args.locality_whole:
        for name in args.methods.split(","):
            method = make_method(name, model, refit_cfg, router, quick_cfg)
            for n in checkpoints:
                rows = [r for r in done["rows"] if key_of(r) == (name, n, args.split, True)]
                if not rows:
                    continue
                # the row's own refit and router settings (the keys it has: a field added since is at its default)
                stored = (rows[0]["extra"].get("refit") or {}) | (rows[0]["extra"].get("router") or {})
                now = refit_settings(refit_of(name, refit_cfg, quick_cfg) or refit_cfg) | dataclasses.asdict(router)
                if any(now.get(k, v) != v for k, v in stored.items()):
                    ap.error(f"--locality-whole: {name} N={n} in {out} was measured with other settings than this run's: {stored}")
                t = time.time()
                spec = method_spec(method, model)
                res = lifelong.locality_over_all(model, tok, spec, method, probes, n, reference=reference, cache=cache_of(name))
                done.clear()
                done.update(json.loads(out.read_text()))  # as in save: others may have written since
                for r in done["rows"]:
                    if key_of(r) == (name, n, args.split, True):
                        r["locality"] = res[r["prompt_format"]]
                        r["extra"]["locality_reached"] = res["reached"]
                tmp = out.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_text(json.dumps(done, indent=1) + "\n")
                tmp.replace(out)
                print(
                    f"{name} N={n}: Locality over all {n} unrelated prompts ({res['reached']} reach an edit) "
                    f"{res['plain']:.1f} / {res['chat']:.1f}, {time.time() - t:.0f} s",
                    flush=True,
                )
        write_table(done, out.with_suffix(".md"))
        plot(done, out.with_suffix(".png"))
        return

    if args.fill:
        k, m = (int(x) for x in args.fill.split("/"))
        for name in args.methods.split(","):
            method = make_method(name, model, refit_cfg, router, quick_cfg)
            if method.holding != "routed":
                continue
            # every record up to the largest N measured whole, and what each sampled N reads
            index = set(range(max([n for n in checkpoints if not sampled(n, name)] + [args.single], default=0)))
            for n in [n for n in checkpoints if sampled(n, name)]:
                index |= set(lifelong.needed(method, tok, probes, n, sum(lifelong.strata(n, args.sample, args.sample_seed), [])))
            holding = method.make_holding(lifelong.base_weights(model, method_spec(method, model).edit_params))
            t = time.time()
            mine = sorted(index)[k::m]
            print(f"  fill {k}/{m} {name}: {len(mine)} of {len(index)} edits", flush=True)
            for j, i in enumerate(mine):
                lifelong.apply_edit(method, model, tok, method_spec(method, model), holding, f"e{i}", records[i], cache_of(name))
                if j % 25 == 0:
                    print(f"  fill {k}/{m} {name}: {j + 1} of {len(mine)} (record {i}), {time.time() - t:.0f} s", flush=True)
        return

    for name in args.methods.split(","):
        method = make_method(name, model, refit_cfg, router, quick_cfg)
        todo = [n for n in checkpoints if (name, n, args.split, sampled(n, name)) not in have]
        skipped = sorted(set(checkpoints) - set(todo))
        if skipped:
            print(f"  {name}: N = {skipped} already in {out} (not measured again; remove those rows or pass --out)", flush=True)
        if args.single and (name, 1, args.split, False) not in have:
            singles = []
            for i in range(args.single):  # N = 1: each record alone, from the unedited weights
                one = lifelong.Probes([records[i]], probes.capability[:0], n_fluency=1, relation=probes.relation)
                singles += lifelong.run(model, tok, method_spec(method, model), method, one, [1], reference=reference, cache=cache_of(name))
            save(average(singles, name))
        for n in [n for n in todo if sampled(n, name)]:
            t = time.time()
            res = lifelong.measure_sample(
                model,
                tok,
                method_spec(method, model),
                method,
                probes,
                n,
                args.sample,
                seed=args.sample_seed,
                reference=reference,
                cache=cache_of(name),
                progress=lambda i, name=name, t=t: i % 100 == 0 and print(f"  {name}: {i} held, {time.time() - t:.0f} s", flush=True),
            )
            save(res)
        todo = [n for n in todo if not sampled(n, name)]
        if todo:
            t = time.time()
            lifelong.run(
                model,
                tok,
                method_spec(method, model),
                method,
                probes,
                todo,
                on_result=save,
                reference=reference,
                cache=cache_of(name),
                progress=lambda i, name=name, t=t: (i % 50 == 0) and print(f"  {name}: {i} edits, {time.time() - t:.0f} s", flush=True),
            )
    write_table(done, out.with_suffix(".md"))
    plot(done, out.with_suffix(".png"))


def method_spec(method: lifelong.Method, model):
    from editor_core.models import ModelSpec

    return method.editor.spec if method.editor is not None else ModelSpec.for_model(model)


def average(rows: list[dict], name: str) -> dict:
    """The mean of single-edit results (each N = 1) as one N = 1 row."""

    def mean(xs):
        xs = [x for x in xs if x is not None]
        return sum(xs) / len(xs) if xs else None

    out = {"method": name, "n_edits": 1, "examples": rows[0]["examples"]}
    for fmt in ("plain", "chat"):
        out[fmt] = {k: mean([r[fmt][k] for r in rows]) for k in rows[0][fmt]}
    for k in ("fluency_ratio", "perplexity_ratio", "norm_ratio_max", "seconds_per_edit", "seconds_instant", "refit_took"):
        out[k] = mean([r[k] for r in rows])
    out["teacher_forced"] = {k: mean([r["teacher_forced"][k] for r in rows]) for k in rows[0]["teacher_forced"]}
    return out


def write_table(done: dict, path: Path) -> None:
    def f(x, digits=1):
        return "" if x is None else f"{x:.{digits}f}"

    lines = [
        f"# Lifelong editing, {done['model']}: all N edits measured at the end, by greedy generation (%)",
        "",
        "| split | method | N | format | Rel | Gen | Loc | first 10 % | fluency x | capability Δ | subject Loc / hijack "
        "| relation Loc / hijack | TF Rel/Gen/Loc | s/edit |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    # a whole row before the sampled one at the same N
    for r in sorted(done["rows"], key=lambda r: (r["extra"]["split"], r["method"], r["n_edits"], key_of(r)[3], r["prompt_format"])):
        tf = r.get("teacher_forced") or {}
        sample = r["extra"].get("sample")
        n = r["n_edits"]
        if sample:
            n = f"{n} (measured: first {sample['first']}, {sample['rest']} of the other {sample['of_rest']})"
        lines.append(
            f"| {r['extra']['split']} | {r['method']} | {n} | {r['prompt_format']} | {f(r['reliability'])} | "
            f"{f(r['generalization'])} | {f(r['locality'])} | {f(r['retention_first10pct'])} | "
            f"{f(r['fluency_ratio'], 2)} | {f(r['capability_delta'])} | "
            f"{f(r['extra'].get('subject_locality'))} / {f(r['extra'].get('subject_hijack'))} | "
            f"{f(r['extra'].get('relation_locality'))} / {f(r['extra'].get('relation_hijack'))} | "
            f"{f(tf.get('reliability'))}/{f(tf.get('generalization'))}/{f(tf.get('locality'))} | {r['seconds_per_edit']:.2f} |"
        )
    path.write_text("\n".join(lines) + "\n")


def points(rows: list[dict], name: str) -> list[tuple[int, float]]:
    """(N, figure) of one series' rows, by N; where an N was measured whole and on a sample, the whole one."""
    at = {}
    for r in sorted(rows, key=lambda r: not r["extra"].get("sample")):  # sampled rows first, so a whole one overwrites
        if r[name] is not None:
            at[r["n_edits"]] = r[name]
    return sorted(at.items())


def plot(done: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = ("reliability", "generalization", "locality", "retention_first10pct")
    fig, axes = plt.subplots(2, len(figures), figsize=(4 * len(figures), 7), sharex=True)
    series = sorted({(r["extra"]["split"], r["method"]) for r in done["rows"]})
    splits = {split for split, _ in series}
    colors = plt.get_cmap("tab20")
    for row, fmt in enumerate(("plain", "chat")):
        for ax, fig_name in zip(axes[row], figures):
            for k, (split, method) in enumerate(series):
                rows = [r for r in done["rows"] if (r["extra"]["split"], r["method"]) == (split, method) and r["prompt_format"] == fmt]
                pts = points(rows, fig_name)
                if pts:  # one line per split and method (a file may hold val and relval rows)
                    label = method if len(splits) == 1 else f"{split}: {method}"
                    ax.plot(*zip(*pts), marker="o", label=label, color=colors(k % colors.N))  # one colour per series in every panel
            ax.set_xscale("log")
            ax.set_ylim(-2, 102)
            ax.set_title(f"{fig_name} ({fmt})", fontsize=9)
            ax.set_xlabel("edits held (N)")
    found = {lab: h for ax in axes.flat for h, lab in zip(*ax.get_legend_handles_labels())}  # every series, once
    labels = list(found)
    handles = [found[lab] for lab in labels]
    rows = (len(labels) + 1) // 2  # under the plots, two columns: long names would squeeze the axes
    fig.legend(handles, labels, fontsize=7, loc="lower center", ncol=2)
    fig.tight_layout(rect=(0, min(0.5, 0.025 * rows + 0.01), 1, 1))
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1:])

"""`instructedit evaluate`: run editors over test sets and write JSON, a
markdown table and a bar chart."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from .evaluate import NO_EDIT, Row, evaluate_records

TRAINED_TASKS = ("counterfact", "wikirecent", "convsent")
COLUMNS = ("reliability", "generalization", "locality", "portability", "fluency", "exact_match")


def parse_editor(spec: str) -> tuple[str, str]:
    """'NAME=PATH' | 'ft-l' | 'none' | PATH -> (method name, what to load)."""
    if "=" in spec:
        name, what = spec.split("=", 1)
        return name, what
    if spec in ("ft-l", "none"):
        return spec, spec
    return Path(spec).stem, spec


def load_method(what: str, model):
    """'none' (no edit), 'ft-l', 'untrained' (MEND at initialization), or a saved editor file."""
    from .editors import MEND, MENDConfig, load_editor
    from .editors.ftl import FTL

    if what == "none":
        return NO_EDIT
    if what == "ft-l":
        return FTL.for_model(model)
    if what == "untrained":
        return MEND.for_model(model, MENDConfig(instruct=False)).eval()
    return load_editor(what, model)


def setting_of(task: str, editor) -> str:
    trained = getattr(editor, "trained_tasks", None) or TRAINED_TASKS
    return "multitask" if task in trained else "holdout"


def run_evaluation(*, editors, model, tasks, records_file=None, n=50, unseen_instruction=True, sequential=False,
                   out: Path, data_dir=None, console=None, append: bool = False) -> list[Row]:
    from .data import load_file, load_task_split
    from .models import load_model

    m, tok = load_model(model)
    if records_file:
        recs = load_file(records_file)[:n]
        sets = {recs[0].task if recs else "records": recs}
    else:
        sets = {t: load_task_split(t, "test", data_dir)[:n] for t in tasks}
    rows: list[Row] = []
    train_seconds = {}
    if append and out.exists():  # keep the other methods' rows from an earlier run
        names = {parse_editor(e)[0] for e in editors}
        prior = json.loads(out.read_text())
        rows = [Row(**r) for r in prior["rows"] if r["method"] not in names]
        train_seconds = {k: v for k, v in prior.get("train_seconds", {}).items() if k not in names}
    for spec in editors:
        name, what = parse_editor(spec)
        editor = load_method(what, m)
        card = _training_card(what)
        if card:
            train_seconds[name] = training_seconds(card)
            editor.trained_tasks = tuple(card.get("config", {}).get("tasks", TRAINED_TASKS))
        instructed = bool(getattr(getattr(editor, "config", None), "instruct", False))
        for task, recs in sets.items():
            variants = [("held", False)] + ([("unseen", True)] if instructed and unseen_instruction else [])
            for variant, held_out in variants:
                summary, _ = evaluate_records(m, tok, editor, recs, held_out=held_out, sequential=sequential)
                setting = "unseen-instruction" if held_out else setting_of(task, editor)
                row = Row(method=name, task=task, setting=setting, n=len(recs),
                          **{k: _round(summary[k]) for k in COLUMNS}, seconds_per_edit=_round(summary["seconds_per_edit"], 3))
                rows.append(row)
                if console:
                    console.print(f"{name:16s} {task:12s} {setting:18s} " + " ".join(f"{k[:4]} {getattr(row, k)}" for k in COLUMNS))
                _write(rows, train_seconds, model, out, sequential)
    return rows


def training_seconds(card: dict) -> float | None:
    """Wall seconds of a training, its first phase included (`init_from`): the
    first phase's card is embedded by `export`, or lies beside its checkpoint."""
    total = card.get("wall_seconds")
    first = card.get("init_from_card")
    init_from = (card.get("config") or {}).get("init_from")
    if first is None and init_from and (Path(init_from).parent / "card.json").exists():
        first = json.loads((Path(init_from).parent / "card.json").read_text())
    if total is not None and first:
        total += training_seconds(first) or 0.0
    return total


def _training_card(what: str) -> dict | None:
    path = Path(what)
    for cand in (path.parent / "card.json", path.with_suffix(".card.json")):
        if cand.exists():
            return json.loads(cand.read_text())
    return None


def _round(x, nd=1):
    return None if x is None else round(float(x), nd)


def _write(rows: list[Row], train_seconds: dict, model: str, out: Path, sequential: bool) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    speed = out.parent / "train_speed.json"
    ratio = json.loads(speed.read_text()).get("step_ratio_to_fwd_bwd") if speed.exists() else None
    payload = {"model": model, "mode": "sequential" if sequential else "single", "rows": [asdict(r) for r in rows],
               "train_seconds": train_seconds, "step_ratio_to_fwd_bwd": ratio}
    for r in payload["rows"]:
        r.pop("extra", None)
    out.write_text(json.dumps(payload, indent=1))
    out.with_suffix(".md").write_text(markdown_table(rows))
    bar_chart(rows, out.with_suffix(".png"))


def markdown_table(rows: list[Row]) -> str:
    head = "| method | task | setting | n | Rel | Gen | Loc | Port | Flu | EM | s/edit |\n|---|---|---|---|---|---|---|---|---|---|---|\n"
    fmt = lambda x: "" if x is None else f"{x:g}"  # noqa: E731
    return head + "".join(
        f"| {r.method} | {r.task} | {r.setting} | {r.n} | " + " | ".join(fmt(getattr(r, k)) for k in COLUMNS) + f" | {fmt(r.seconds_per_edit)} |\n"
        for r in rows
    )


def bar_chart(rows: list[Row], path: Path) -> None:
    """Bars per task (x) and method (colour), one panel per metric. The rows of
    the held-back instruction stay in the table: each method has one bar per task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    main = [r for r in rows if r.setting != "unseen-instruction"] or rows
    tasks = list(dict.fromkeys(r.task for r in main))
    methods = list(dict.fromkeys(r.method for r in main))
    metrics_ = [m for m in ("reliability", "generalization", "locality", "portability") if any(getattr(r, m) is not None for r in main)]
    colours = plt.get_cmap("tab10" if len(methods) <= 10 else "tab20")
    fig, axes = plt.subplots(1, len(metrics_), figsize=(3.4 * len(metrics_), 3.6), sharey=True, squeeze=False)
    width = 0.84 / max(len(methods), 1)
    for ax, metric in zip(axes[0], metrics_):
        for j, method in enumerate(methods):
            value = {r.task: getattr(r, metric) for r in main if r.method == method}
            xs = [i + (j - (len(methods) - 1) / 2) * width for i in range(len(tasks))]
            ax.bar(xs, [value.get(t) or 0 for t in tasks], width, color=colours(j % colours.N), label=method)
        ax.set_xticks(range(len(tasks)))
        ax.set_xticklabels(tasks, fontsize=8)
        ax.set_title(metric, fontsize=10)
        ax.set_ylim(0, 100)
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)

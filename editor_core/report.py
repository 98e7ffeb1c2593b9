"""`instructedit evaluate`: run editors over test sets and write JSON, a
markdown table and a bar chart."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from .data import load_file, load_task_split
from .editors import build_editor, load_editor, registered, untrained_editor
from .evaluate import NO_EDIT, Row, evaluate_records
from .models import load_model
from .plots import bar_chart

TRAINED_TASKS = ("counterfact", "wikirecent", "convsent")
COLUMNS = ("reliability", "generalization", "locality", "portability", "fluency", "exact_match")


def parse_editor(spec: str) -> tuple[str, str]:
    """'NAME=PATH' | 'none' | 'untrained' | a registered tag ('ft-l') | PATH -> (method name, what to load)."""
    if "=" in spec:
        name, what = spec.split("=", 1)
        return name, what
    if spec in ("none", "untrained", *registered()):
        return spec, spec
    return Path(spec).stem, spec


def load_method(what: str, model):
    """'none' (no edit), 'untrained' (`editors.untrained_editor`), a registered
    editor tag ('ft-l': a new one with its config's defaults), or a saved editor file."""
    if what == "none":
        return NO_EDIT
    if what == "untrained":
        return untrained_editor(model)
    if what in registered():
        return build_editor(what, model)
    return load_editor(what, model)


def setting_of(task: str, editor) -> str:
    trained = getattr(editor, "trained_tasks", None) or TRAINED_TASKS
    return "multitask" if task in trained else "holdout"


def run_evaluation(*, editors, model, tasks, records_file=None, n=50, unseen_instruction=True, sequential=False,
                   out: Path, data_dir=None, console=None, append: bool = False) -> list[Row]:
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
            for _variant, held_out in variants:
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
        f"| {r.method} | {r.task} | {r.setting} | {r.n} | " + " | ".join(fmt(getattr(r, k)) for k in COLUMNS)
        + f" | {fmt(r.seconds_per_edit)} |\n"
        for r in rows
    )

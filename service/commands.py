"""The `instructedit` console script: the science commands of
`editor_core.cli` plus `serve`, which lives here so that editor_core never
imports the service, and the commands for a running service (`edits ...`,
`ask`, `info`; service/remote.py). (The command is `serve_command`; the function it runs is
`service.server.serve`.)"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from editor_core.cli import app

from . import remote
from .auth import ApiKey, KeyConfigError, KeyRing, Scope, UnsafeBind, hash_key, new_key, parse_keys
from .server import serve
from .settings import Settings

remote.install(app)


@app.command("serve")
def serve_command(
    host: Optional[str] = typer.Option(None, help="bind address (default 127.0.0.1; INSTRUCTEDIT_HOST)"),
    port: Optional[int] = typer.Option(None, help="port (default 8000; INSTRUCTEDIT_PORT)"),
    model: Optional[str] = typer.Option(None, help="model (default smollm2-135m; INSTRUCTEDIT_MODEL)"),
    editor: Optional[str] = typer.Option(None, help="editor checkpoint (default: the shipped one; INSTRUCTEDIT_EDITOR_PATH)"),
    store: Optional[str] = typer.Option(None, help="store directory (default ./instructedit-store; INSTRUCTEDIT_STORE_DIR)"),
):
    """Serve the model and its editor over HTTP (Redis Streams when REDIS_URL is set)."""
    given = {"host": host, "port": port, "model": model, "editor_path": editor, "store_dir": store}
    try:
        serve(Settings(**{k: v for k, v in given.items() if v is not None}))
    except (UnsafeBind, KeyConfigError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None


keys = typer.Typer(help="API keys for the service (bearer tokens; only their sha256 is kept).", no_args_is_help=True)
app.add_typer(keys, name="keys")


@keys.command("create")
def create_key(
    name: str = typer.Argument(..., help="recorded as the author of every edit made with the key"),
    scope: str = typer.Option("ask", help="ask (generate, read), edit (also add and roll back edits) or admin"),
    file: Path = typer.Option(Path("instructedit-keys.txt"), help="the keys file to append to (INSTRUCTEDIT_API_KEYS_FILE)"),
):
    """Make a key: print it once, append `name:scope:sha256` to the keys file."""
    token = new_key()
    line = ApiKey(name, Scope(scope) if scope in Scope.__members__ else scope, hash_key(token)).line()
    try:
        existing = parse_keys(file.read_text(), source=str(file)) if file.exists() else []
        KeyRing(existing + parse_keys(line, source="the new key"))
    except KeyConfigError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    with file.open("a") as f:
        f.write(line + "\n")
    file.chmod(0o600)
    typer.echo(f"key {name!r} ({scope}) added to {file}; it is shown only now:", err=True)
    typer.echo(token)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()

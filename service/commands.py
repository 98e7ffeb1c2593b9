"""The `instructedit` console script: the science commands of
`editor_core.cli` plus `serve`, which lives here so that editor_core never
imports the service, and the commands for a running service (`edits ...`,
`ask`, `info`; service/remote.py). (The command is `serve_command`; the function it runs is
`service.server.serve`.)"""

from __future__ import annotations

from typing import Optional

import typer

from editor_core.cli import app

from . import remote
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
    serve(Settings(**{k: v for k, v in given.items() if v is not None}))


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()

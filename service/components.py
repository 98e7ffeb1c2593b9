"""The heavy things the service holds: model, tokenizer and editor.

`load_components(settings)` builds them from settings (the service's start);
tests build a `Components` of their own (a tiny model, an untrained editor)
and pass it to `create_app(settings, components=...)`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from editor_core.editors import load_editor, untrained_editor
from editor_core.models import load_model

from .settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Components:
    model: Any  # a causal LM from editor_core.models.load_model; the service never changes it
    tokenizer: Any
    editor: Any  # an editor_core Editor with `.spec.edit_params`
    editor_path: str | None = None  # where the editor was read from; None: built in memory
    trained: bool = True


class EditorMissing(RuntimeError):
    """No editor at the configured path, and no permission to run an untrained one."""


def load_components(settings: Settings) -> Components:
    """Load the model, then the editor at `settings.editor_path`. A missing editor
    is an error unless `allow_untrained_editor` says an untrained editor will do
    (`editor_core.editors.untrained_editor`; its edits barely move the model)."""
    path = settings.editor_path
    if not path.exists() and not settings.allow_untrained_editor:
        raise EditorMissing(
            f"no editor at {path}. Train one (or point INSTRUCTEDIT_EDITOR_PATH at one), or set "
            "INSTRUCTEDIT_ALLOW_UNTRAINED_EDITOR=true to serve with an untrained editor (edits will barely change the model)."
        )
    model, tokenizer = load_model(settings.model, device=settings.device, dtype=settings.dtype)
    if path.exists():
        return Components(model, tokenizer, load_editor(path, model), editor_path=str(path), trained=True)
    log.warning("no editor at %s: serving with an UNTRAINED editor (allow_untrained_editor=true)", path)
    return Components(model, tokenizer, untrained_editor(model), editor_path=None, trained=False)

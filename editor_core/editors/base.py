"""What every editor is, and the registry that builds one by its tag.

An editor computes a `Delta` for some edit records and never changes the
model: the caller (the evaluation loop, the service's worker) decides whether
and when the delta becomes part of the weights.

A new editor is a module in this package that defines a config dataclass and
a class with a `tag`, `for_model(model, config)` and `compute_delta(model,
tokenizer, records)`, and ends with `register_editor(tag, ConfigClass,
EditorClass, loader=...)` (`loader(path, model, **overrides)` reads a saved
one; omit it for editors without learned weights). `editors/__init__.py`
imports it, so it is registered whenever the package is.

    build_editor("ft-l", model, steps=10)   # a new editor; config fields as keywords
    load_editor(path, model)                # a saved one; its kind is read from the file
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable, Protocol, runtime_checkable

import torch
from safetensors import safe_open

from ..delta import Delta
from ..records import EditRecord


@runtime_checkable
class Editor(Protocol):
    tag: str

    def compute_delta(self, model, tokenizer, records: list[EditRecord]) -> Delta:
        """A delta that makes `model` produce each record's target after its prompt."""
        ...


@dataclass(frozen=True)
class EditorEntry:
    tag: str
    config_cls: type
    editor_cls: type
    # Reads a saved editor of this kind: (path, model) -> editor.
    loader: Callable | None = None


_REGISTRY: dict[str, EditorEntry] = {}


def register_editor(tag: str, config_cls: type, editor_cls: type, loader: Callable | None = None) -> None:
    if tag in _REGISTRY and _REGISTRY[tag].editor_cls is not editor_cls:
        raise ValueError(f"editor tag {tag!r} is already registered to {_REGISTRY[tag].editor_cls.__name__}")
    _REGISTRY[tag] = EditorEntry(tag, config_cls, editor_cls, loader)


def get_editor(tag: str) -> EditorEntry:
    try:
        return _REGISTRY[tag]
    except KeyError:
        raise ValueError(f"unknown editor {tag!r}; registered: {sorted(_REGISTRY)}") from None


def registered() -> list[str]:
    return sorted(_REGISTRY)


def build_editor(tag: str, model, **config_overrides) -> Editor:
    """A new editor of kind `tag` for `model`, from its registered config class
    with `config_overrides` on top of that class's defaults. A torch editor is
    put on the model's device, in eval mode (call `.train()` to train it)."""
    entry = get_editor(tag)
    known = {f.name for f in fields(entry.config_cls)}
    unknown = sorted(set(config_overrides) - known)
    if unknown:
        raise ValueError(f"{entry.config_cls.__name__} has no field(s) {unknown}; known: {sorted(known)}")
    editor = entry.editor_cls.for_model(model, entry.config_cls(**config_overrides))
    if isinstance(editor, torch.nn.Module):
        editor = editor.to(model.device).eval()
    return editor


def read_metadata(path: str | Path) -> dict:
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata() or {})
    return meta


def load_editor(path: str | Path, model, **kwargs) -> Editor:
    """Load a saved editor; its kind is read from the file's own metadata tag."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no editor checkpoint at {path}")
    meta = read_metadata(path)
    tag = meta.get("editor")
    if tag is None:
        raise ValueError(f"{path} is not an instructedit editor (no 'editor' tag in its metadata)")
    entry = get_editor(tag)
    if entry.loader is None:
        raise ValueError(f"editor {tag!r} has no saved form")
    return entry.loader(path, model, **kwargs)

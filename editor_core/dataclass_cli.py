"""Command-line options made from a config dataclass, so its defaults exist once.

Each field becomes `--field-name` (booleans `--x/--no-x`), its help text is the
field's `metadata["help"]`, and the default shown is the dataclass's own.
Every option defaults to "not given" (None), so a command can layer what was
given on top of a recipe on top of the dataclass defaults (`layered`).

Value forms: a tuple field takes comma-separated items (`--tasks a,b`), a
dict field takes JSON, and an optional field (`X | None`) takes `none` to
clear a value that a recipe set.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import types
import typing
from typing import Any, Callable, Optional, Union

import typer

_NONE = object()  # `--x none` on an optional field: "set it to None", unlike "not given"


def setting(default: Any = dataclasses.MISSING, help: str = "", *, factory: Callable | None = None) -> Any:  # noqa: A002 (click's word)
    """A dataclass field with help text for its command-line option."""
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata={"help": help})
    return dataclasses.field(default=default, metadata={"help": help})


def _unwrap_optional(tp) -> tuple[Any, bool]:
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _parser(tp, optional: bool) -> Callable[[str], Any] | None:
    """A text-to-value function for types click does not read by itself."""
    origin = typing.get_origin(tp)
    if origin is tuple:
        inner = typing.get_args(tp)[0]
        base = lambda s: tuple(inner(x.strip()) for x in s.split(",") if x.strip())  # noqa: E731
    elif tp is dict or origin is dict:
        base = json.loads
    elif optional:
        base = tp
    else:
        return None
    if not optional:
        return base
    return lambda s: _NONE if s.strip().lower() == "none" else base(s)


def _metavar(tp, optional: bool) -> str | None:
    origin = typing.get_origin(tp)
    if origin is tuple:
        name = "A,B,..."
    elif tp is dict or origin is dict:
        name = "JSON"
    elif optional:
        name = getattr(tp, "__name__", str(tp)).upper()
    else:
        return None  # typer's own
    return f"{name}|none" if optional else name


def options(cls, *, skip: tuple[str, ...] = ()) -> list[inspect.Parameter]:
    """One keyword-only typer parameter per field of `cls` (but `skip`)."""
    hints = typing.get_type_hints(cls)
    params = []
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        tp, optional = _unwrap_optional(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        flag = "--" + f.name.replace("_", "-")
        decls = [f"{flag}/--no-{flag[2:]}"] if tp is bool else [flag]
        parser = _parser(tp, optional)
        if isinstance(default, tuple):
            shown = ",".join(map(str, default))
        else:
            shown = json.dumps(default) if isinstance(default, dict) else str(default)
        option = typer.Option(None, *decls, help=f.metadata.get("help", ""), show_default=shown, parser=parser,
                              metavar=_metavar(tp, optional))
        annotation = Optional[str if parser is not None and (typing.get_origin(tp) is tuple or tp is dict) else tp]
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation))
    return params


def given(values: dict[str, Any]) -> dict[str, Any]:
    """The options the user actually gave, with `none` turned into None."""
    return {k: (None if v is _NONE else v) for k, v in values.items() if v is not None}


def layered(cls, *layers: dict[str, Any]):
    """`cls(**defaults)` with each layer's keys on top of the ones before (later wins).
    Unknown keys are an error, naming the fields that exist."""
    names = {f.name for f in dataclasses.fields(cls)}
    merged: dict[str, Any] = {}
    for layer in layers:
        unknown = sorted(set(layer) - names)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; known: {sorted(names)}")
        merged.update(layer)
    return cls(**merged)


def with_signature(params: list[inspect.Parameter]):
    """Give a `def f(**kwargs)` command the signature typer reads its options from."""

    def wrap(func):
        own = [p for p in inspect.signature(func).parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
        func.__signature__ = inspect.Signature([*own, *params])
        return func

    return wrap

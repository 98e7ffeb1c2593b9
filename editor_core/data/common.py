"""Helpers shared by the format loaders: the data directory, JSON reading,
answer normalisation, stable hashing and fact keys."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable

from editor_core.records import Probe

DATA_DIR_ENV = "INSTRUCTEDIT_DATA_DIR"


def default_data_dir() -> Path:
    """The data directory: `$INSTRUCTEDIT_DATA_DIR` if set, else `../shared/data`
    relative to the repository root. The one place this is resolved."""
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    return Path(data_dir) if data_dir is not None else default_data_dir()


def data_file(relpath: str, data_dir: str | os.PathLike | None = None) -> Path:
    """Path of `relpath` inside the data directory; FileNotFoundError if absent."""
    path = resolve_data_dir(data_dir) / relpath
    if not path.is_file():
        raise FileNotFoundError(
            f"data file not found: expected {path}. Pass data_dir=... or set the "
            f"{DATA_DIR_ENV} environment variable to the directory holding "
            f"zsre_mend/, counterfact_mend/ and knowedit/ (default: {default_data_dir()})."
        )
    return path


def read_json(path: str | os.PathLike) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"data file not found: expected {path} (set {DATA_DIR_ENV} to change the data directory)"
        )
    with path.open(encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    return data


def clean(text: Any) -> str:
    """A stripped string ('' for None / non-strings)."""
    return text.strip() if isinstance(text, str) else ""


def first_string(value: Any) -> str | None:
    """The first non-empty string in a str, list of str, or list of alias lists
    (KnowEdit writes all three), stripped; None if there is none."""
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, (list, tuple)):
        for item in value:
            found = first_string(item)
            if found is not None:
                return found
    return None


def probes_from_groups(groups: Any) -> tuple[tuple[Probe, ...], tuple[str, ...]]:
    """KnowEdit locality/portability: a dict of lists of {prompt, ground_truth}
    -> (probes, kind of each probe). Probes without a prompt or answer are dropped."""
    probes: list[Probe] = []
    kinds: list[str] = []
    if not isinstance(groups, dict):
        return (), ()
    for kind, items in groups.items():
        if isinstance(items, dict):
            items = [items]
        if not isinstance(items, list):
            continue
        for item in items:
            if not isinstance(item, dict):
                continue
            prompt, truth = item.get("prompt"), item.get("ground_truth")
            pairs = zip(prompt, truth) if isinstance(prompt, list) and isinstance(truth, list) else [(prompt, truth)]
            for p, t in pairs:
                p, a = clean(p), first_string(t)
                if p and a:
                    probes.append(Probe(p, a))
                    kinds.append(str(kind))
    return tuple(probes), tuple(kinds)


def normalize(text: str) -> str:
    """Case- and whitespace-insensitive form of a prompt, for fact keys."""
    return " ".join(text.casefold().split()).rstrip(" ?.!")


def fact_key(prompt: str, target_new: str) -> tuple[str, str]:
    return normalize(prompt), normalize(target_new)


def stable_bucket(key: str, buckets: int = 100) -> int:
    """A bucket in [0, buckets) from sha256 of the key: stable across runs and machines."""
    return int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:12], 16) % buckets


def nonempty(texts: Iterable[Any]) -> tuple[str, ...]:
    return tuple(t for t in (clean(x) for x in texts) if t)

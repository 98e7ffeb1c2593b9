"""Named training recipes: one JSON file each, beside this module.

A recipe file holds a `description`, a `config` (values of `TrainConfig`
fields; the others keep their defaults) and, optionally, `needs`: fields the
caller must give because they name a run's own files (a second phase's
`init_from`). The twin of a recipe (multi-task MEND) is the same recipe with
`--no-instruct`; single-task MEND adds `--tasks counterfact`.

    instructedit train --recipe v4-p2 --init-from runs/v4-p1/best.safetensors --out runs/v4-p2
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

RECIPES_DIR = Path(__file__).parent


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    config: dict
    needs: tuple[str, ...] = ()


def recipe_names() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.json"))


def load_recipe(name_or_path: str | Path) -> Recipe:
    """A shipped recipe by name, or a recipe file by path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = RECIPES_DIR / f"{name_or_path}.json"
    if not path.exists():
        raise ValueError(f"no recipe {str(name_or_path)!r}; shipped recipes: {recipe_names()} (or give a recipe file's path)")
    body = json.loads(path.read_text())
    # JSON has lists where the config has tuples (tasks, select_on).
    config = {k: tuple(v) if isinstance(v, list) else v for k, v in body.get("config", {}).items()}
    return Recipe(str(name_or_path), body.get("description", ""), config, tuple(body.get("needs", ())))

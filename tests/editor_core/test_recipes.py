"""Named recipes (editor_core/recipes/*.json): each is a valid TrainConfig, the
training card records which one a run used, and a recipe file works like a name."""

import json
from pathlib import Path

import pytest

import editor_core
from editor_core.models import tiny_model
from editor_core.recipes import load_recipe, recipe_names
from editor_core.train import train
from editor_core.train_config import TrainConfig, make_config


def test_every_shipped_recipe_is_a_valid_config():
    names = recipe_names()
    assert {"v1", "v4-p1", "v4-p2", "cpu-p1", "cpu-p2"} <= set(names)
    for name in names:
        r = load_recipe(name)
        assert r.description and r.config, name
        cfg = make_config(name, **{k: "runs/p1/best.safetensors" for k in r.needs})
        for key, value in r.config.items():
            assert getattr(cfg, key) == value, (name, key)
        assert cfg.recipe == name


def test_the_shipped_editor_recipe_matches_its_training_card():
    """v4-p1 and v4-p2 say what the shipped editor's card says it was trained with (paths and budgets aside)."""
    card = json.loads((Path(editor_core.__file__).parent / "artifacts" / "smollm2-135m" / "instructedit.card.json").read_text())
    for recipe, config in (("v4-p2", card["config"]), ("v4-p1", card["init_from_card"]["config"])):
        for key, value in load_recipe(recipe).config.items():
            if key in config and key not in ("max_minutes", "select_on"):
                assert config[key] == (list(value) if isinstance(value, tuple) else value), (recipe, key)


def test_missing_needs_and_unknown_fields_are_errors(tmp_path):
    with pytest.raises(ValueError, match="--init-from"):
        make_config("cpu-p2")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"description": "a typo", "config": {"stepz": 3}}))
    with pytest.raises(ValueError, match="stepz"):
        make_config(str(bad))
    with pytest.raises(ValueError, match="no recipe"):
        make_config("nonexistent")


def test_a_recipe_file_trains_and_the_card_records_it(tmp_path):
    recipe = tmp_path / "mine.json"
    recipe.write_text(json.dumps({"description": "tiny", "config": {"steps": 2, "val_every": 2, "kl_scope": "answer", "rank": 8}}))
    cfg = make_config(str(recipe), model="tiny-llama", val_per_task=2, max_per_task=20, out=str(tmp_path / "run"))
    assert (cfg.steps, cfg.kl_scope, cfg.rank, cfg.hard_negatives) == (2, "answer", 8, TrainConfig().hard_negatives)
    card = train(cfg, model_and_tokenizer=tiny_model("llama"), resume=False, show_progress=False)
    saved = json.loads((tmp_path / "run" / "card.json").read_text())
    assert card["step"] == 2 and saved["recipe"] == str(recipe)
    assert saved["config"]["recipe"] == str(recipe) and saved["config"]["kl_scope"] == "answer" and saved["config"]["steps"] == 2

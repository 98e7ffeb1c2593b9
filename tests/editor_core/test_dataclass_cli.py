"""`instructedit train`'s options are made from TrainConfig (editor_core/dataclass_cli.py):
every field can be set, and given options win over the recipe, which wins over the defaults."""

import dataclasses

import pytest
from typer.testing import CliRunner

from editor_core import cli
from editor_core.train_config import TrainConfig
from service.commands import app

runner = CliRunner()

# Text fields need a valid value other than the default; numbers and flags are derived below.
TEXT = {
    "model": "tiny-llama", "kl_scope": "both", "sampling": "uniform", "dtype": "bfloat16", "out": "runs/x",
    "data_dir": "/tmp/data", "init_from": "runs/a/best.safetensors", "recipe": "v1",
}
TUPLES = {"tasks": ("counterfact", "zsre"), "select_on": ("rel", "loc")}


def other_value(f: dataclasses.Field):
    """A value of the field's type that is not its default, and its command-line form."""
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    flag = "--" + f.name.replace("_", "-")
    if f.name in TEXT:
        return TEXT[f.name], [flag, TEXT[f.name]]
    if f.name in TUPLES:
        return TUPLES[f.name], [flag, ",".join(TUPLES[f.name])]
    if isinstance(default, bool):
        return not default, [flag if not default else f"--no-{flag[2:]}"]
    if isinstance(default, dict):
        return {"note": "x"}, [flag, '{"note": "x"}']
    if isinstance(default, int):
        return default + 1, [flag, str(default + 1)]
    if isinstance(default, float) or default is None:  # the optional numbers are max_per_task (int) and max_minutes (float)
        value = 7 if f.name == "max_per_task" else 2.5 if default is None else default * 2 + 0.5
        return value, [flag, str(value)]
    raise AssertionError(f"no test value for TrainConfig.{f.name}: add one to TEXT or TUPLES")


@pytest.fixture
def seen(monkeypatch):
    """What the command would train with: the parsing is under test here, the training in test_train.py."""
    configs = []

    def capture(cfg, resume):
        configs.append((cfg, resume))
        return {"step": 0, "wall_seconds": 0.0, "best": None}

    monkeypatch.setattr(cli, "run_training", capture)
    return configs


def test_every_field_is_an_option(seen):
    expected, args = {}, []
    for f in dataclasses.fields(TrainConfig):
        expected[f.name], flag = other_value(f)
        args += flag
    res = runner.invoke(app, ["train", *args, "--fresh"])
    assert res.exit_code == 0, res.output
    cfg, resume = seen[-1]
    assert resume is False
    assert dataclasses.asdict(cfg) == expected
    assert all(expected[k] != v for k, v in dataclasses.asdict(TrainConfig()).items())


def test_no_options_is_the_dataclass_defaults(seen):
    assert runner.invoke(app, ["train"]).exit_code == 0
    assert seen[-1] == (TrainConfig(), True)


def test_given_options_beat_the_recipe_which_beats_the_defaults(seen):
    res = runner.invoke(app, ["train", "--recipe", "v1", "--steps", "5", "--max-minutes", "none", "--instruct"])
    assert res.exit_code == 0, res.output
    cfg = seen[-1][0]
    assert cfg.steps == 5 and cfg.max_minutes is None  # given (v1 says 2000 and 40)
    assert (cfg.val_every, cfg.kl_scope, cfg.hard_negatives, cfg.raw_prompt_row) == (150, "answer", 0, False)  # v1's
    assert (cfg.rank, cfg.lr, cfg.recipe) == (512, 1e-4, "v1")  # defaults, and the recipe's name


def test_bad_values_are_refused_with_a_reason(seen):
    for args, reason in [(["--sampling", "nope"], "sampling"), (["--recipe", "v9"], "no recipe"),
                         (["--recipe", "v4-p2"], "--init-from"), (["--rank", "many"], "rank")]:
        res = runner.invoke(app, ["train", *args])
        assert res.exit_code == 2 and reason in res.output, res.output
    assert seen == []

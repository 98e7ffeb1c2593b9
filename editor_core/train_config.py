"""The settings of a training run: `TrainConfig`, the one source of their
defaults (`instructedit train` makes an option of each field), and
`make_config`, which layers a named recipe and the caller's values on top."""

from __future__ import annotations

from dataclasses import dataclass

from .data import TASKS
from .dataclass_cli import layered, setting
from .recipes import load_recipe

KL_SCOPES = ("answer", "all", "both", "after")
SELECT_ON = ("rel", "gen", "loc", "after", "raw")  # validation statistics that `selection_score` can average


@dataclass
class TrainConfig:
    """Everything a training run reads: the one source of its defaults (`instructedit
    train` makes an option of each field, `dataclass_cli`). The defaults are the
    shipped editor's recipe (v4, phase 2); named recipes live in `editor_core/recipes/`."""

    model: str = setting("smollm2-135m", "HF id, local path or built-in name")
    tasks: tuple[str, ...] = setting(("counterfact", "wikirecent", "convsent"), "training tasks")
    instruct: bool = setting(True, "InstructEdit, or plain MEND (multi-task; single-task with one task)")
    rank: int = setting(512, "hypernetwork rank")
    n_last_layers: int = setting(3, "edit the MLP weights of this many last blocks")
    steps: int = setting(3000, "training steps (a second phase counts on top of its first)")
    batch_size: int = setting(1, "records edited jointly per step")
    # The reference's 1e-6 barely moves the hypernetwork on a CPU budget.
    lr: float = setting(1e-4, "learning rate of the hypernetwork (Adam)")
    lr_step: float = setting(1e-5, "learning rate of the per-weight step sizes")
    step_init: float = setting(-1e-4, "initial per-weight step size (negative: a descent step)")
    # c_edit and c_loc as chosen on the validation splits (docs/RESULTS.md).
    c_edit: float = setting(0.1, "weight of the edit NLL in the loss")
    c_loc: float = setting(5.0, "weight of the locality KL in the loss")
    # Where KL(unedited ‖ edited) is taken. "answer": the locality answer tokens
    # only. "all": every position of the locality prompt, plus every position of
    # the edit example that does not predict the target (its prompt, and the
    # token after the target), so that an edit fires where the target is due and
    # nowhere else (without it, edits spill over: "Rome Rome Rome ...").
    # "both": the mean over locality answers plus the mean over all of those
    # positions, so the answers keep their weight (with "all" they are a few
    # positions among many, and neighbourhood prompts drift). "after": the locality
    # answers plus, as a second mean, the position right after each scored target
    # (what follows "Rome"), the one place spill-over shows, leaving the prompt free.
    kl_scope: str = setting("after", "KL on locality answers only ('answer', the reference), every unrelated position ('all'), "
                                     "both terms ('both'), or the answers plus the token after each target ('after')")
    train_on_rephrase: bool = setting(True, "also score the target after a rephrased prompt")
    # Users query the edited model with plain prompts, so the edit must hold without an instruction.
    raw_rephrase_prob: float = setting(0.3, "chance that a rephrase row drops its instruction")
    # The edit is made from the instructed prompt, but users then ask the model the plain question.
    raw_prompt_row: bool = setting(True, "instructed editors: also score the target after the plain edit prompt")
    # It pulls the edit towards plain prompts, which look like the locality neighbours.
    raw_row_weight: float = setting(1.0, "weight of that plain-prompt row in the edit loss (the other target rows weigh 1)")
    # An edit must leave alone prompts unlike its own task's, too.
    cross_locality: bool = setting(False, "add a locality probe from another training task to every edit")
    # Each hard negative is the prompt of another training record of the same task
    # that shares the edit prompt's template (the prompt with its subject cut out:
    # the same relation about another subject), with that record's true answer.
    # Such neighbours are what CounterFact's locality measures, and where an edit leaks most.
    hard_negatives: int = setting(2, "extra locality rows per edit: same-relation prompts about other subjects")
    sampling: str = setting("balanced", "balanced (a task uniformly, then a record) or uniform (a record)")
    # A first phase that leaves spill-over to a second one selects on rel,gen,loc.
    select_on: tuple[str, ...] = setting(SELECT_ON, "validation statistics whose mean picks the best checkpoint and drives "
                                                    "early stopping (see selection_score)")
    max_per_task: int | None = setting(None, "use at most this many training records per task")
    seed: int = setting(0, "random seed")
    data_dir: str | None = setting(None, "data directory (default: $INSTRUCTEDIT_DATA_DIR or ../shared/data)")
    # On a GPU too: bf16 logits blur the KL.
    dtype: str = setting("float32", "the model's dtype while training")
    # Same model, rank and instruct flag; a fresh optimizer; its steps count on top of that editor's own.
    init_from: str | None = setting(None, "start from this saved editor's weights (a second phase with another recipe)")
    out: str = setting("runs/instructedit", "checkpoint directory (resumed if it holds one)")
    val_every: int = setting(200, "validate every this many steps")
    val_per_task: int = setting(30, "validation records per task")
    patience: int = setting(5, "validations without improvement before stopping")
    max_minutes: float | None = setting(None, "wall-clock budget, across resumes (validation included)")
    grad_clip: float = setting(1.0, "gradient norm clip")
    norm_freeze_steps: int = setting(500, "the normalization statistics freeze after this many steps")
    recipe: str | None = setting(None, "a named recipe (editor_core/recipes/NAME.json) or a recipe file; "
                                       "options given with it override its values")
    extra: dict = setting(help="free-form notes kept in the training card", factory=dict)

    def __post_init__(self):
        if self.kl_scope not in KL_SCOPES:
            raise ValueError(f"kl_scope must be one of {KL_SCOPES}, got {self.kl_scope!r}")
        if not self.raw_row_weight >= 0:  # NaN too
            raise ValueError(f"raw_row_weight must be >= 0, got {self.raw_row_weight}")
        if self.hard_negatives < 0:
            raise ValueError(f"hard_negatives must be >= 0, got {self.hard_negatives}")
        if self.sampling not in ("balanced", "uniform"):
            raise ValueError(f"sampling must be 'balanced' or 'uniform', got {self.sampling!r}")
        self.select_on = tuple(self.select_on)
        if not self.select_on or not set(self.select_on) <= set(SELECT_ON):
            raise ValueError(f"select_on must name some of {SELECT_ON}, got {self.select_on!r}")
        unknown = [t for t in self.tasks if t not in TASKS]
        if not self.tasks or unknown:
            raise ValueError(f"unknown training tasks {unknown or '(none given)'}; known: {list(TASKS)}")


def make_config(recipe: str | None = None, **overrides) -> TrainConfig:
    """The config of a run: `TrainConfig`'s defaults, then the recipe's values,
    then `overrides` (what the caller gave), each layer winning over the one before."""
    if recipe is None:
        return layered(TrainConfig, overrides)
    r = load_recipe(recipe)
    missing = [k for k in r.needs if overrides.get(k) is None]
    if missing:
        raise ValueError(f"recipe {recipe!r} needs {', '.join('--' + k.replace('_', '-') for k in missing)}: {r.description}")
    return layered(TrainConfig, r.config, {"recipe": recipe}, overrides)

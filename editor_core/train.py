"""Training an editor: InstructEdit (instructed, multi-task), or the MEND baselines.

One step edits a batch of training records jointly and asks the edited model
(1) to produce each target after the edit prompt, a rephrasing of it and, for
an instructed editor, the plain prompt without its instruction, and (2) to
leave unchanged the distribution over each record's locality answer, over
same-relation neighbours of the edit (hard negatives), and over the token
after each target (see `TrainConfig.kl_scope`):

    loss = c_edit · NLL(target | edited) + c_loc · KL(unedited ‖ edited)

All rows of a step (edit, rephrase, locality) share one pass through the
blocks below the first edited one, without autograd; only the top blocks run
twice (once to take the edit gradient, once with the delta), and the LM head
runs only at answer positions.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict
from pathlib import Path

import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from safetensors.torch import load_file, save_file

from .data import default_data_dir, load_task_split
from .editors import MEND, build_editor
from .hooks import SplitRunner
from .losses import kl_div, row_nll
from .models import load_model
from .plots import plot_curves
from .records import EditRecord, Probe
from .tokens import encode_pairs
from .train_config import SELECT_ON, TrainConfig

EDIT, REPHRASE, LOCALITY, RAW = 0, 1, 2, 3


# --------------------------------------------------------------------------- one step


def build_rows(editor: MEND, records: list[EditRecord], rng: random.Random, train_on_rephrase: bool, raw_prob: float = 0.0,
               extra_locality: list[Probe] = (), raw_prompt_row: bool = False):
    prompts, answers, kinds = [], [], []
    for r in records:
        inst = editor.instructed(r, rng=rng)
        prompts.append(inst.prompt), answers.append(inst.target_new), kinds.append(EDIT)
        if raw_prompt_row and inst.prompt != r.prompt:
            prompts.append(r.prompt), answers.append(r.target_new), kinds.append(RAW)
        if train_on_rephrase and inst.rephrase_prompts:
            src = r if raw_prob and rng.random() < raw_prob else inst
            prompts.append(rng.choice(src.rephrase_prompts)), answers.append(inst.target_new), kinds.append(REPHRASE)
        if r.locality:
            probe = rng.choice(r.locality)
            prompts.append(probe.prompt), answers.append(probe.answer), kinds.append(LOCALITY)
    for probe in extra_locality:
        prompts.append(probe.prompt), answers.append(probe.answer), kinds.append(LOCALITY)
    return prompts, answers, torch.tensor(kinds)


def edit_step(editor: MEND, runner: SplitRunner, tokenizer, records, rng, cfg: TrainConfig, train: bool = True,
              extra_locality: list[Probe] = ()) -> dict:
    """Run one joint edit; return the loss (a graph when train) and statistics:
    edit-prompt and rephrase token accuracy and locality argmax agreement."""
    model = runner.model
    prompts, answers, kinds = build_rows(editor, records, rng, cfg.train_on_rephrase or not train,
                                         cfg.raw_rephrase_prob if train else 0.0, extra_locality, cfg.raw_prompt_row)
    batch = encode_pairs(tokenizer, prompts, answers, max_length=editor.config.max_length).to(model.device)
    kinds = kinds.to(model.device)
    cut = runner.bottom(batch.input_ids, batch.attention_mask)
    captured, h0 = editor.capture(runner, cut, batch, rows=kinds == EDIT)
    is_loc = (kinds == LOCALITY)[:, None]
    tgt_mask = batch.answer_mask & ~is_loc
    last = batch.attention_mask.sum(1) - 1  # right-padded: the last real token, which ends the target
    after = torch.zeros_like(batch.answer_mask)
    after[torch.arange(len(kinds), device=after.device), last] = True
    if cfg.kl_scope in ("all", "both"):
        kl_mask = batch.attention_mask.bool() & (is_loc | ((kinds == EDIT)[:, None] & ~batch.answer_mask))
    elif cfg.kl_scope == "after":
        kl_mask = (batch.answer_mask & is_loc) | (after & ~is_loc)
    else:
        kl_mask = batch.answer_mask & is_loc
    loc_sel = (batch.answer_mask & is_loc)[kl_mask]  # locality answer positions among the KL ones
    with torch.no_grad():
        base_loc = runner.logits(h0, kl_mask)
    with torch.set_grad_enabled(train):
        overrides = {}
        for p, (left, right) in editor.factors(captured).items():
            w = model.get_parameter(p)
            overrides[p] = w + (left @ right).to(w.dtype)
        h1, _ = runner.top(cut, overrides=overrides)
        logits = runner.logits(h1, tgt_mask)
        rows = tgt_mask.nonzero()[:, 0]
        per_row = row_nll(logits, batch.labels[tgt_mask], rows, len(kinds))
        weight = (kinds != LOCALITY).float()
        weight[kinds == RAW] = cfg.raw_row_weight
        nll = (per_row * weight).sum() / weight.sum()
        edited_loc = runner.logits(h1, kl_mask)
        kl = kl_div(base_loc, edited_loc)
        if cfg.kl_scope == "both":
            kl = kl + kl_div(base_loc[loc_sel], edited_loc[loc_sel])
        elif cfg.kl_scope == "after":
            kl = kl_div(base_loc[loc_sel], edited_loc[loc_sel]) + kl_div(base_loc[~loc_sel], edited_loc[~loc_sel])
        loss = cfg.c_edit * nll + cfg.c_loc * kl
    with torch.no_grad():
        hit = (logits.argmax(-1) == batch.labels[tgt_mask]).float()
        row_kind = kinds[rows]
        stats = {
            "loss_value": loss.item(),
            "nll": nll.item(),
            "kl": kl.item(),
            "rel": hit[row_kind == EDIT].mean().item(),
            "gen": hit[row_kind == REPHRASE].mean().item() if (row_kind == REPHRASE).any() else float("nan"),
            "raw": hit[row_kind == RAW].mean().item() if (row_kind == RAW).any() else float("nan"),
            "loc": (edited_loc[loc_sel].argmax(-1) == base_loc[loc_sel].argmax(-1)).float().mean().item()
                   if loc_sel.any() else float("nan"),
        }
        if not train:  # spill-over: does the next token after the new target stay the unedited model's?
            edit_after = after & (kinds == EDIT)[:, None]
            stats["after"] = (runner.logits(h1, edit_after).argmax(-1) == runner.logits(h0, edit_after).argmax(-1)).float().mean().item()
    return {"loss": loss, **stats}


def selection_score(res: dict, keys: tuple[str, ...] = SELECT_ON) -> float:
    """What early stopping follows and which editor ships: the mean of
    reliability, generalization, locality, `after` (how often the token after
    the new target is still the one the unedited model predicts there; low means
    the edit spills over: "Rome Rome Rome") and, for an instructed editor, `raw`
    (reliability on the plain edit prompt, which is what users then ask); or of
    the subset `keys` of those."""
    return _nanmean([res.get(k, float("nan")) for k in keys])


def validate(editor: MEND, runner: SplitRunner, tokenizer, records: list[EditRecord], cfg: TrainConfig) -> dict:
    """Edit each record alone from the unedited weights; mean statistics in %,
    overall and per task, and their `selection_score` as `score`."""
    was_training = editor.training
    editor.eval()
    rng = random.Random(1234)
    per: dict[str, dict[str, list[float]]] = {}
    for r in records:
        out = edit_step(editor, runner, tokenizer, [r], rng, cfg, train=False)
        for k in ("rel", "gen", "loc", "after", "raw"):
            if out[k] == out[k]:  # not NaN
                per.setdefault(r.task, {}).setdefault(k, []).append(out[k])
                per.setdefault("all", {}).setdefault(k, []).append(out[k])
    editor.train(was_training)
    mean = lambda v: 100 * sum(v) / len(v) if v else float("nan")  # noqa: E731
    res = {k: mean(per.get("all", {}).get(k, [])) for k in ("rel", "gen", "loc", "after", "raw")}
    res["score"] = selection_score(res, cfg.select_on)
    res["tasks"] = {t: {k: round(mean(v), 1) for k, v in d.items()} for t, d in per.items() if t != "all"}
    return res


# --------------------------------------------------------------------------- data


def training_pools(cfg: TrainConfig, split: str) -> dict[str, list[EditRecord]]:
    pools = {}
    for task in cfg.tasks:
        recs = load_task_split(task, split, cfg.data_dir)
        if split == "train" and cfg.max_per_task:
            recs = recs[: cfg.max_per_task]
        pools[task] = recs
    return pools


def other_task_probes(pools: dict[str, list[EditRecord]], records: list[EditRecord], rng: random.Random) -> list[Probe]:
    """One locality probe per record, from a record of another task (of the
    same task when training on one), for `TrainConfig.cross_locality`."""
    out = []
    for r in records:
        tasks = [t for t in sorted(pools) if t != r.task and pools[t]] or [r.task]
        pool = [x for x in pools[rng.choice(tasks)] if x.locality]
        if pool:
            out.append(rng.choice(rng.choice(pool).locality))
    return out


def template(record: EditRecord) -> str | None:
    """The edit prompt with its subject cut out ("The mother tongue of {} is"),
    or None when the prompt does not name the subject."""
    if not record.subject or record.subject not in record.prompt:
        return None
    return record.prompt.replace(record.subject, "{}", 1)


class NeighbourIndex:
    """Training records grouped by (task, prompt template), for
    `TrainConfig.hard_negatives`: the same relation asked of other subjects,
    each with its true answer."""

    def __init__(self, pools: dict[str, list[EditRecord]]):
        self.groups: dict[tuple[str, str], list[EditRecord]] = {}
        for records in pools.values():
            for r in records:
                key = template(r)
                if key is not None and r.ground_truth:
                    self.groups.setdefault((r.task, key), []).append(r)

    def probes(self, record: EditRecord, k: int, rng: random.Random) -> list[Probe]:
        key = template(record)
        group = self.groups.get((record.task, key), []) if key is not None else []
        others = [r for r in group if r.subject != record.subject]
        return [Probe(r.prompt, r.ground_truth) for r in rng.sample(others, min(k, len(others)))]


def extra_probes(cfg: TrainConfig, pools: dict[str, list[EditRecord]], neighbours: NeighbourIndex | None,
                 records: list[EditRecord], rng: random.Random) -> list[Probe]:
    """The locality rows a step adds to the records' own: a probe of another
    task (`cross_locality`) and the hard negatives (`hard_negatives`)."""
    extra = other_task_probes(pools, records, rng) if cfg.cross_locality else []
    if neighbours is not None and cfg.hard_negatives:
        extra += [p for r in records for p in neighbours.probes(r, cfg.hard_negatives, rng)]
    return extra


def sample(pools: dict[str, list[EditRecord]], n: int, rng: random.Random, how: str) -> list[EditRecord]:
    if how == "balanced":
        return [rng.choice(pools[rng.choice(sorted(pools))]) for _ in range(n)]
    if how == "uniform":
        flat = [r for t in sorted(pools) for r in pools[t]]
        return [rng.choice(flat) for _ in range(n)]
    raise ValueError(f"sampling must be 'balanced' or 'uniform', got {how!r}")


# --------------------------------------------------------------------------- checkpoints


def save_optimizer(opt: torch.optim.Optimizer, path: Path) -> dict:
    """Adam state as safetensors; returns its JSON-able part (param groups)."""
    sd = opt.state_dict()
    tensors = {f"{idx}.{k}": v.contiguous() for idx, st in sd["state"].items() for k, v in st.items()}
    save_file(tensors, str(path))
    return {"param_groups": sd["param_groups"]}


def load_optimizer(opt: torch.optim.Optimizer, path: Path, groups: dict) -> None:
    state: dict[int, dict] = {}
    for key, t in load_file(str(path)).items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = t
    opt.load_state_dict({"state": state, "param_groups": groups["param_groups"]})


class Checkpoint:
    """`out/` holds editor.safetensors (latest), best.safetensors (best on
    validation), optimizer.safetensors, card.json (the training card) and
    curves.png."""

    def __init__(self, out: str | Path):
        self.dir = Path(out)
        self.card_path = self.dir / "card.json"

    def exists(self) -> bool:
        return self.card_path.exists() and (self.dir / "editor.safetensors").exists()

    def read_card(self) -> dict:
        return json.loads(self.card_path.read_text())

    def write(self, editor: MEND, opt, card: dict, best: bool) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        extra = {"training_card": json.dumps({k: card[k] for k in ("config", "step", "data", "best")}, default=str)}
        editor.save(self.dir / "editor.tmp", extra=extra)
        (self.dir / "editor.tmp").replace(self.dir / "editor.safetensors")
        if best:
            editor.save(self.dir / "best.tmp", extra=extra)
            (self.dir / "best.tmp").replace(self.dir / "best.safetensors")
        card["optimizer"] = save_optimizer(opt, self.dir / "optimizer.safetensors")
        tmp = self.dir / "card.tmp"
        tmp.write_text(json.dumps(card, indent=1, default=str))
        tmp.replace(self.card_path)


# --------------------------------------------------------------------------- the loop


def data_card(train: dict, val: dict, cfg: TrainConfig) -> dict:
    return {
        "data_dir": str(cfg.data_dir or default_data_dir()),
        "train": {t: len(v) for t, v in train.items()},
        "val": {t: len(v) for t, v in val.items()},
        "splits": "editor_core.data.splits (deterministic; see its docstring)",
    }


def train(cfg: TrainConfig, *, resume: bool = True, model_and_tokenizer=None, show_progress: bool = True) -> dict:
    """Train (or resume) an editor; returns the training card."""
    model, tok = model_and_tokenizer or load_model(cfg.model, dtype=cfg.dtype)
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 on a GPU too
    torch.backends.cudnn.allow_tf32 = False
    ckpt = Checkpoint(cfg.out)
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    train_pools, val_pools = training_pools(cfg, "train"), training_pools(cfg, "val")
    val_records = [r for t in sorted(val_pools) for r in val_pools[t][: cfg.val_per_task]]
    neighbours = NeighbourIndex(train_pools) if cfg.hard_negatives else None
    card = {"config": asdict(cfg), "recipe": cfg.recipe, "step": 0, "wall_seconds": 0.0, "curve": [], "validation": [], "best": None,
            "data": data_card(train_pools, val_pools, cfg), "model": cfg.model, "stopped": None}
    if resume and ckpt.exists():
        card = ckpt.read_card()
        editor = MEND.load(ckpt.dir / "editor.safetensors", model)
        rng.setstate(_tuple(card["rng_state"]))
    elif cfg.init_from:
        editor = MEND.load(cfg.init_from, model)
        if (editor.config.instruct, editor.config.rank) != (cfg.instruct, cfg.rank):
            raise ValueError(f"{cfg.init_from} has instruct={editor.config.instruct}, rank={editor.config.rank}; "
                             f"this run asks for instruct={cfg.instruct}, rank={cfg.rank}")
    else:
        editor = build_editor(MEND.tag, model, rank=cfg.rank, n_last_layers=cfg.n_last_layers, step_init=cfg.step_init,
                              instruct=cfg.instruct)
        editor.model_id = cfg.model
    editor.to(model.device).train()
    opt = torch.optim.Adam([
        {"params": [p for n, p in editor.named_parameters() if n != "steps"], "lr": cfg.lr},
        {"params": [editor.steps], "lr": cfg.lr_step},
    ])
    if resume and ckpt.exists() and (ckpt.dir / "optimizer.safetensors").exists():
        load_optimizer(opt, ckpt.dir / "optimizer.safetensors", card["optimizer"])
    runner = SplitRunner(model, editor.spec)
    best = selection_score(card["best"], cfg.select_on) if card["best"] else -1.0  # by today's rule, also for older cards
    since_best = card.get("since_best", 0)
    t0 = time.time() - card["wall_seconds"]

    def over_budget() -> bool:
        return cfg.max_minutes is not None and time.time() - t0 > 60 * cfg.max_minutes

    window: list[dict] = []

    progress = Progress(TextColumn("[bold]train"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                        TextColumn("{task.fields[info]}"), TimeElapsedColumn(), disable=not show_progress)
    with progress:
        bar = progress.add_task("train", total=cfg.steps, completed=card["step"], info="")
        while card["step"] < cfg.steps:
            if card["step"] >= cfg.norm_freeze_steps or cfg.init_from:
                for t in editor.transforms.values():
                    t.norm.frozen.fill_(True)
            records = sample(train_pools, cfg.batch_size, rng, cfg.sampling)
            extra = extra_probes(cfg, train_pools, neighbours, records, rng)
            out = edit_step(editor, runner, tok, records, rng, cfg, extra_locality=extra)
            opt.zero_grad(set_to_none=True)
            out["loss"].backward()
            torch.nn.utils.clip_grad_norm_(editor.parameters(), cfg.grad_clip)
            opt.step()
            card["step"] += 1
            window.append({k: out[k] for k in ("loss_value", "nll", "kl", "rel", "gen", "loc", "raw")})
            if len(window) == 20 or card["step"] == cfg.steps:
                avg = {k: _nanmean([w[k] for w in window]) for k in window[0]}
                card["curve"].append({"step": card["step"], **avg, "wall": time.time() - t0})
                info = f"loss {avg['loss_value']:.3f} es {100 * avg['rel']:.0f}% loc {100 * avg['loc']:.0f}%"
                progress.update(bar, info=info)
                if show_progress and not progress.console.is_terminal and card["step"] % 100 == 0:
                    # Under nohup or a pipe the bar never draws: log a plain line instead.
                    progress.console.print(f"step {card['step']}/{cfg.steps}: {info}, "
                                           f"{(time.time() - t0) / 60:.1f} min")
                window = []
            progress.update(bar, completed=card["step"])
            if card["step"] % cfg.val_every == 0 or card["step"] == cfg.steps or over_budget():
                res = validate(editor, runner, tok, val_records, cfg)
                res["step"] = card["step"]
                card["validation"].append(res)
                improved = res["score"] > best
                if improved:
                    best, since_best = res["score"], 0
                    card["best"] = res
                else:
                    since_best += 1
                card["since_best"] = since_best
                card["wall_seconds"] = time.time() - t0
                card["rng_state"] = rng.getstate()
                ckpt.write(editor, opt, card, best=improved)
                plot_curves(card, ckpt.dir / "curves.png")
                progress.console.print(f"step {card['step']}: val rel {res['rel']:.1f} gen {res['gen']:.1f} loc {res['loc']:.1f}"
                                       f" score {res['score']:.1f}{' (best)' if improved else ''}")
                if since_best >= cfg.patience:
                    card["stopped"] = f"early stop: {cfg.patience} validations without improvement"
                    break
                if over_budget():  # asked again: the validation counts too
                    card["stopped"] = f"time budget of {cfg.max_minutes} minutes reached"
                    break
    card["wall_seconds"] = time.time() - t0
    card["rng_state"] = rng.getstate()
    ckpt.write(editor, opt, card, best=False)
    return card


def _nanmean(xs: list[float]) -> float:
    xs = [x for x in xs if x == x]
    return sum(xs) / len(xs) if xs else float("nan")


def _tuple(x):
    return tuple(_tuple(i) for i in x) if isinstance(x, list) else x

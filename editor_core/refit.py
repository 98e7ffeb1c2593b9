"""Refit: make one edit show in generated answers, by a few gradient steps on its own delta.

A hypernetwork's delta moves the teacher-forced answer, but greedy generation
may still begin elsewhere or run on past the answer. A refit adds a small
low-rank correction to the edit's delta and fits it on the edit alone:

    ΔW = ΔW_editor + A B     (A: out x r, zero at start; B: r x in, small random)

trained with Adam on the negative log-likelihood of `target + EOS` after each
way the question is asked (the plain prompt, the prompt inside the chat
template, and any rephrasings the caller gave). It stops as soon as every
answer token, EOS included, is the model's argmax given the answer so far:
from then on greedy decoding produces exactly the target and stops, so the
check is a teacher-forced forward, not a generation.

Only the edit's own delta is fitted, on the base weights plus that delta. That
is what a routed memory (`editor_core.routing`) serves for questions in the
edit's scope, so a refit costs the same with 1 or 1000 edits held, and it
can run beside new edits without waiting for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from .chat import chat_prompt, end_of_turn
from .delta import Delta
from .hooks import SplitRunner
from .losses import row_nll
from .models import ModelSpec
from .tokens import encode_pairs


@dataclass(frozen=True)
class RefitConfig:
    # Chosen on validation records (ZsRE train, CounterFact val; docs/RESULTS.md): lr 1e-3 with
    # rank 4 took on 3 % of edits in 40 steps; lr 1e-2 with rank 8 took on all of them, in 8 steps on average.
    steps: int = 60  # at most; most edits stop far earlier
    lr: float = 1e-2
    rank: int = 8  # of the correction A B on each fitted weight
    # Which edited weights get a correction: the last `n_weights` of the spec's
    # list (for Llama-style specs that is the last block's down_proj).
    n_weights: int = 1
    init_scale: float = 1e-2  # of B; A starts at zero so the correction starts at zero
    chat: bool = True  # also fit the answer inside the chat template
    max_length: int = 128
    seed: int = 0


@dataclass(frozen=True)
class RefitResult:
    delta: Delta
    steps: int
    took: bool  # every asked form now answers the target, then stops


def question_forms(tokenizer, prompt: str, rephrasings: tuple[str, ...] = (), *, chat: bool = True) -> list[str]:
    """Every way the edit's question is asked that the refit fits."""
    forms = [prompt, *rephrasings]
    if chat:
        forms += [chat_prompt(tokenizer, q) for q in (prompt, *rephrasings)]
    return forms


def refit(
    model,
    tokenizer,
    spec: ModelSpec,
    prompt: str,
    target: str,
    delta: Delta | None,
    config: RefitConfig = RefitConfig(),
    *,
    rephrasings: tuple[str, ...] = (),
    more: Sequence[tuple[str, str, tuple[str, ...]]] = (),
) -> RefitResult:
    """`delta` plus a fitted correction; `model` must hold the base weights of `spec`'s params.
    `more` holds further (prompt, target, rephrasings) of the same edit (a batch edit)."""
    forms, answers = [], []
    for p, t, reph in [(prompt, target, tuple(rephrasings)), *more]:
        asked = question_forms(tokenizer, p, reph, chat=config.chat)
        forms += asked
        answers += [t + end_of_turn(tokenizer)] * len(asked)
    batch = encode_pairs(tokenizer, forms, answers, config.max_length).to(model.device)
    runner = SplitRunner(model, spec)
    cut = runner.bottom(batch.input_ids, batch.attention_mask)
    mask = batch.answer_mask
    rows, labels = mask.nonzero()[:, 0], batch.labels[mask]

    base = {p: model.get_parameter(p) for p in spec.edit_params}
    fixed = {p: (delta.dense(p).to(base[p].device) if delta is not None and p in delta.factors else None) for p in base}
    fitted = list(spec.edit_params[-config.n_weights :])
    gen = torch.Generator().manual_seed(config.seed)
    corr = {}
    for p in fitted:
        out_dim, in_dim = base[p].shape
        a = torch.zeros(out_dim, config.rank, device=base[p].device, requires_grad=True)
        b = (torch.randn(config.rank, in_dim, generator=gen) * config.init_scale).to(base[p].device).requires_grad_(True)
        corr[p] = (a, b)
    opt = torch.optim.Adam([t for pair in corr.values() for t in pair], lr=config.lr)

    def weights(with_grad: bool) -> dict[str, torch.Tensor]:
        out = {}
        for p, w in base.items():
            acc = w.float() if fixed[p] is None else w.float() + fixed[p]
            if p in corr:
                a, b = corr[p]
                acc = acc + (a @ b if with_grad else (a @ b).detach())
            out[p] = acc.to(w.dtype)
        return out

    steps, took = 0, False
    for steps in range(config.steps + 1):
        with torch.enable_grad():
            h, _ = runner.top(cut, overrides=weights(True))
            logits = runner.logits(h, mask)
            took = bool((logits.argmax(-1) == labels).all())
            if took or steps == config.steps:
                break
            loss = row_nll(logits, labels, rows, len(forms)).mean()
            opt.zero_grad()
            loss.backward()
        opt.step()

    factors = {}
    for p in spec.edit_params:
        parts = []
        if delta is not None and p in delta.factors:
            parts.append(tuple(t.float().cpu() for t in delta.factors[p]))
        if p in corr and steps:
            a, b = corr[p]
            parts.append((a.detach().float().cpu(), b.detach().float().cpu()))
        if parts:  # ΔW = [L1 L2] @ [R1; R2], still exact factors
            factors[p] = (torch.cat([l for l, _ in parts], dim=1), torch.cat([r for _, r in parts], dim=0))
    meta = dict(delta.meta) if delta is not None else {"editor": "refit"}
    meta.update({"refit_steps": steps, "refit_took": took})
    return RefitResult(Delta(factors, meta), steps, took)


@torch.inference_mode()
def answers_exactly(model, tokenizer, prompts: Sequence[str], targets: Sequence[str], max_length: int = 128) -> list[bool]:
    """Per prompt: is every token of `target + EOS` the model's argmax given the
    ones before it? Then greedy decoding says exactly the target and stops."""
    answers = [t + end_of_turn(tokenizer) for t in targets]
    batch = encode_pairs(tokenizer, list(prompts), answers, max_length).to(model.device)
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False).logits
    hit = (logits.argmax(-1) == batch.labels) | ~batch.answer_mask
    return hit.all(dim=1).tolist()

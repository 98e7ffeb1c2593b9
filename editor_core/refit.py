"""Refit: make one edit show in generated answers, by a few gradient steps on its own delta.

A hypernetwork's delta moves the teacher-forced answer, but greedy generation
may still begin elsewhere or run on past the answer. A refit adds a small
low-rank correction to the edit's delta and fits it on the edit alone:

    ΔW = ΔW_editor + A B     (A: out x r, zero at start; B: r x in, small random)

trained with Adam on the negative log-likelihood of `target + EOS` after each
way the question is asked: the plain prompt, the prompt inside the chat
template, any rephrasings the caller gave, and a few variants made here (the
question after an unrelated sentence, the question with a few words left out)
so that the correction answers the question's subject, not its exact wording.
It stops once every answer token, EOS included, is the model's argmax given
the answer so far with probability at least `min_prob` (a margin: an edit
that only just took on its own wording fails on a rephrasing). Argmax answers
mean greedy decoding produces exactly the target and stops, so the check is a
teacher-forced forward, not a generation.

What follows the answer is kept as the unedited model has it: on the base
model's own continuation of `question + target`, the fitted model's next-token
distributions (EOS left out) are pulled to the base's by a KL term. Without it
a text forced on past the answer (EOS suppressed, as fluency is measured)
repeats the target.

Only the edit's own delta is fitted, on the base weights plus that delta. That
is what a routed memory (`editor_core.routing`) serves for questions in the
edit's scope, so a refit costs the same with 1 or 1000 edits held, and it
can run beside new edits without waiting for them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

import torch

from .chat import chat_prompt, end_of_turn
from .delta import Delta
from .hooks import SplitRunner
from .losses import row_nll
from .models import ModelSpec
from .tokens import encode_pairs, encode_prompts, end_of_text_ids, join_answer


@dataclass(frozen=True)
class RefitConfig:
    # Chosen on validation records (ZsRE train, CounterFact val; bench/results/refit_choice.md, 24 edits):
    # lr 1e-3 with rank 4 took on 3 % of edits in 40 steps; lr 1e-2 with rank 8 took on all of them.
    # Stopping at bare argmax answered 58 % of plain rephrasings; a 0.8 margin and 4 made variants, 96 %;
    # fitting 4 weights instead of 1, 100 % (and 92 / 97 % plain / chat against 87 / 95 % over 100
    # routed validation edits, bench/lifelong.py --split val).
    steps: int = 60  # at most; most edits stop far earlier
    lr: float = 1e-2
    rank: int = 8  # of the correction A B on each fitted weight
    # Which edited weights get a correction: the last `n_weights` of the spec's list
    # (Llama-style specs list gate, up and down per block: 4 is the next-to-last block's
    # down_proj and the last block's three MLP weights).
    n_weights: int = 4
    init_scale: float = 1e-2  # of B; A starts at zero so the correction starts at zero
    chat: bool = True  # also fit the answer inside the chat template
    min_prob: float = 0.8  # every answer token's probability must reach this before the refit stops
    variants: int = 4  # extra question forms made here: alternately prefixed and with words left out
    # Tokens of the base model's continuation after the answer whose distributions are kept (0: off).
    # It trades generalization for fluency past EOS: on validation, keeping 16 raised ROME-style
    # fluency from 0.25x to 0.69x and lowered plain-rephrasing answers from 83 % to 62 %.
    keep: int = 0
    keep_weight: float = 1.0
    max_length: int = 128
    seed: int = 0


@dataclass(frozen=True)
class RefitResult:
    delta: Delta
    steps: int
    took: bool  # every asked form now answers the target, then stops


# Unrelated sentences put before a question, so that a fitted answer does not
# depend on the question being the first thing in the context (written for this).
PREFIXES = (
    "The weather was mild for most of the week.",
    "Here is a question from a quiz.",
    "I was reading about this yesterday.",
    "The meeting has been moved to Thursday.",
    "Many people have asked about this.",
    "This was in the news last year.",
)


def variants(prompt: str, n: int, seed: int = 0) -> list[str]:
    """`n` variants of `prompt`: alternately after an unrelated sentence, and with
    about a quarter of its lower-case words left out (capitalized words, most
    often the subject's name, and the first word stay). Deterministic per prompt."""
    rng = random.Random(f"{seed}:{prompt}")
    words = prompt.split()
    droppable = [i for i, w in enumerate(words) if i > 0 and not w[:1].isupper()]
    out: list[str] = []
    for k in range(n):
        if k % 2 == 0 or not droppable:
            out.append(f"{PREFIXES[rng.randrange(len(PREFIXES))]} {prompt}")
        else:
            drop = set(rng.sample(droppable, max(1, len(droppable) // 4)))
            out.append(" ".join(w for i, w in enumerate(words) if i not in drop))
    return out


def question_forms(
    tokenizer, prompt: str, rephrasings: tuple[str, ...] = (), *, chat: bool = True, n_variants: int = 0, seed: int = 0
) -> list[str]:
    """Every way the edit's question is asked that the refit fits."""
    asked = [prompt, *rephrasings, *variants(prompt, n_variants, seed)]
    forms = list(asked)
    if chat:
        forms += [chat_prompt(tokenizer, q) for q in asked]
    return forms


@torch.no_grad()
def _continuations(model, tokenizer, forms: list[str], target: str, n_tokens: int) -> list[str]:
    """The base model's greedy continuation (EOS suppressed) of each `form + target`."""
    texts = [f + join_answer(f, target) for f in forms]
    ids, mask = encode_prompts(tokenizer, texts)
    device = next(model.parameters()).device
    out = model.generate(
        input_ids=ids.to(device),
        attention_mask=mask.to(device),
        max_new_tokens=n_tokens,
        min_new_tokens=n_tokens,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
    )
    return [tokenizer.decode(row, skip_special_tokens=True) for row in out[:, ids.shape[1] :].tolist()]


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
    forms, answers, kept = [], [], []
    for p, t, reph in [(prompt, target, tuple(rephrasings)), *more]:
        asked = question_forms(tokenizer, p, reph, chat=config.chat, n_variants=config.variants, seed=config.seed)
        forms += asked
        answers += [t + end_of_turn(tokenizer)] * len(asked)
        if config.keep:
            own = [p, chat_prompt(tokenizer, p)] if config.chat else [p]
            kept += [(f, t, c) for f, c in zip(own, _continuations(model, tokenizer, own, t, config.keep))]
    batch = encode_pairs(tokenizer, forms, answers, config.max_length).to(model.device)
    runner = SplitRunner(model, spec)
    cut = runner.bottom(batch.input_ids, batch.attention_mask)
    mask = batch.answer_mask
    rows, labels = mask.nonzero()[:, 0], batch.labels[mask]
    keep = _KeptText(runner, tokenizer, kept, config.max_length) if kept else None

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
            w = weights(True)
            h, _ = runner.top(cut, overrides=w)
            logits = runner.logits(h, mask)
            logp = torch.log_softmax(logits.float(), dim=-1).gather(1, labels[:, None])[:, 0]
            took = bool((logits.argmax(-1) == labels).all()) and float(logp.detach().min().exp()) >= config.min_prob
            if took or steps == config.steps:
                break
            loss = row_nll(logits, labels, rows, len(forms)).mean()
            if keep is not None:
                loss = loss + config.keep_weight * keep.divergence(w)
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


class _KeptText:
    """The base model's next-token distributions on its own continuation of
    `question + target`, from the token after the target on (EOS left out, as
    in a continuation forced past the answer), and the KL of a fitted model's
    from them."""

    def __init__(self, runner: SplitRunner, tokenizer, kept: list[tuple[str, str, str]], max_length: int):
        self.runner = runner
        forms = [f for f, _, _ in kept]
        batch = encode_pairs(tokenizer, forms, [t + c for _, t, c in kept], max_length).to(runner.model.device)
        # answer positions that predict the continuation: all but the target's own tokens
        n_target = [len(tokenizer(join_answer(f, t), add_special_tokens=False)["input_ids"]) for f, t, _ in kept]
        mask = batch.answer_mask.clone()
        for i, n in enumerate(n_target):
            first = int(mask[i].nonzero()[0])
            mask[i, first : first + n] = False
        self.mask = mask
        self.cut = runner.bottom(batch.input_ids, batch.attention_mask)
        self.eos = sorted(end_of_text_ids(runner.model, tokenizer))
        with torch.no_grad():
            h, _ = runner.top(self.cut)
            self.reference = self._log_probs(runner.logits(h, mask))

    def _log_probs(self, logits: torch.Tensor) -> torch.Tensor:
        logits = logits.float().clone()
        logits[:, self.eos] = -1e4  # out of the distribution, but finite (no NaN in the gradient)
        return torch.log_softmax(logits, dim=-1)

    def divergence(self, overrides: dict[str, torch.Tensor]) -> torch.Tensor:
        h, _ = self.runner.top(self.cut, overrides=overrides)
        logp = self._log_probs(self.runner.logits(h, self.mask))
        return torch.nn.functional.kl_div(logp, self.reference, log_target=True, reduction="batchmean")


@torch.inference_mode()
def answers_exactly(model, tokenizer, prompts: Sequence[str], targets: Sequence[str], max_length: int = 128) -> list[bool]:
    """Per prompt: is every token of `target + EOS` the model's argmax given the
    ones before it? Then greedy decoding says exactly the target and stops."""
    answers = [t + end_of_turn(tokenizer) for t in targets]
    batch = encode_pairs(tokenizer, list(prompts), answers, max_length).to(model.device)
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False).logits
    hit = (logits.argmax(-1) == batch.labels) | ~batch.answer_mask
    return hit.all(dim=1).tolist()

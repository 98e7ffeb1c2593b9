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

KL terms keep text the edit should not change as the unedited
model has it (each on the base model's own greedy continuation, the fitted
model's next-token distributions pulled to the base's):

* `subject_questions`: other questions about the edit's subject ("What is
  Peru known for?"). A routed edit runs on every question that names its
  subject, and without this a refit that learned "Peru -> Quito" answers
  "Quito" to "Tell me about Peru's history." The refit then also stops only
  once these questions' greedy continuations are the base's again.
* `relation_questions` (off): questions about another relation of the subject
  ("The founder of Peru is"); measured on validation, not adopted: it costs
  the edit's own rephrasings about as much as it saves (docs/RESULTS.md,
  "Another relation, on validation").
* `keep`: what follows the answer (EOS left out, as in a text forced on past
  the answer, which is how fluency is measured). Without it the fitted model's
  next choice after the answer is often the chat template's `<|im_start|>`, and
  the text goes on with role words and the target again ("Sega<|im_start|>assistant
  \nSega<|im_start|>user ...").

The subject and relation terms read the base's likeliest tokens at each kept
position and the answer's tokens (`anchor_vocab`), not the whole vocabulary:
the head over 49k tokens at every kept position was most of a step. `keep`
reads the whole vocabulary, since the tokens it must hold down past the
answer (`<|im_start|>`) are the ones the base never considers there; it has
few positions.

Only the edit's own delta is fitted, on the base weights plus that delta. That
is what a routed memory (`editor_core.routing`) serves for questions in the
edit's scope, so a refit costs the same with 1 or 1000 edits held, and it
can run beside new edits without waiting for them.
"""

from __future__ import annotations

import dataclasses
import random
import re
import weakref
from dataclasses import dataclass
from typing import Sequence

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from .chat import chat_prefix, chat_prompt, end_of_turn
from .delta import Delta
from .hooks import LowRank, MLPTop, SplitRunner
from .losses import row_mean
from .models import ModelSpec
from .routing import NARROW, subject_of
from .tokens import encode_pairs, encode_prompts, end_of_text_ids, join_answer


@dataclass(frozen=True)
class RefitConfig:
    # Chosen on validation records (ZsRE train, CounterFact val; bench/results/refit_choice.md, 24 edits):
    # lr 1e-3 with rank 4 took on 3 % of edits in 40 steps; lr 1e-2 with rank 8 took on all of them.
    # Stopping at bare argmax answered 58 % of plain rephrasings; a 0.8 margin and 4 made variants, 96 %;
    # fitting 4 weights instead of 1, 100 % (and 92 / 97 % plain / chat against 87 / 95 % over 100
    # routed validation edits, bench/lifelong.py --split val).
    # At most; most edits stop earlier. Session 23, 120 on 100 routed validation edits (bench/lifelong.py --split val,
    # bench/results/lifelong_val.md): rephrasings 81 / 92 % against 82 / 92 (plain / chat), 48.2 steps against 41.3,
    # no other quality figure moved: not adopted.
    steps: int = 60
    lr: float = 1e-2
    # of the correction A B on each fitted weight. Session 24, 16 on 100 routed validation edits: rephrasings 78 / 92 %
    # against 82 / 92 (plain / chat), subject questions answered as unedited 62 / 8 % against 68 / 4, subject hijack
    # 5 / 2 % against 2 / 1, 40.4 steps (13 at the cap) against 41.3 (21): not adopted.
    rank: int = 8
    # Which edited weights get a correction: the last `n_weights` of the spec's list
    # (Llama-style specs list gate, up and down per block: 4 is the next-to-last block's
    # down_proj and the last block's three MLP weights). Session 21, all 9 on 100 validation edits: rephrasings
    # 80 / 93 % against 82 / 92 (plain / chat) at about twice the refit's time: not adopted.
    n_weights: int = 4
    init_scale: float = 1e-2  # of B; A starts at zero so the correction starts at zero
    chat: bool = True  # also fit the answer inside the chat template
    # every answer token's probability must reach this before the refit stops. Session 24, 0.9 on 100 routed validation
    # edits: rephrasings 82 / 92 % (plain / chat), subject questions 67 / 4 %, fluency 0.97x, 42.0 steps, all as the
    # default's within one edit (the refit mostly waits on the kept subject questions past 0.9 anyway): not adopted.
    min_prob: float = 0.8
    # extra question forms made here: alternately prefixed and with words left out. Session 22, 8 on 100 routed
    # validation edits: rephrasings 79 / 93 % against 82 / 92 (plain / chat) at 1.5x the refit's time: not adopted.
    variants: int = 4
    # Which words a made variant may leave out: "any" lower-case word but the first, "glue" only
    # function words (`_GLUE`: the relation's own words stay), "none" (every variant is prefixed).
    # Session 20, on 30 relval edits: "glue" left another relation's questions answered with the
    # target as often (76.7 / 83.3 % plain / chat against 76.7 / 76.7 %): not adopted.
    variant_drops: str = "any"
    # Tokens of the base model's continuation after the answer whose distributions are kept, EOS
    # left out, over the whole vocabulary (0: off). On 30 routed validation edits (session 13,
    # bench/results/lifelong_val.md) 8 against 0: fluency past EOS 1.05x against 0.60x, rephrasings
    # 80.0 / 80.0 % against 86.7 / 83.3 % (plain / chat; 4 against 0: 0.95x, 83.3 / 76.7 %), and
    # 1.45x the refit's time (bench/refit_speed.py). On test at N = 100: fluency 1.01x against
    # 0.71x, rephrasings 69 / 82 % against 79 / 82 % (74 / 91 % since session 14's kept questions).
    # (Session 8, with the 1-weight refit: 16 raised fluency from 0.25x to 0.69x, plain rephrasings
    # 83 % -> 62 %.)
    keep: int = 8
    # Session 23, 0.5 on 100 routed validation edits (bench/results/lifelong_val.md): rephrasings 78 / 94 % against
    # 82 / 92, questions about the subject answered as unedited 63 / 6 % against 68 / 4, fluency 0.95x against 0.97x:
    # not adopted.
    keep_weight: float = 1.0
    # Other questions about the edit's subject (the first `subject_questions` of SUBJECT_QUESTIONS,
    # plain and in the chat template) whose first `subject_tokens` answer tokens are kept (0: off).
    # On 30 routed validation edits (bench/lifelong.py --split val), 4 questions with weight 4 took
    # the chat questions about an edited subject answered with its target ("Tell me about Peru." ->
    # "Quito") from 90 % to 7 %, and fluency from 0.14x to 0.57x; chat rephrasings 97 % -> 80 %,
    # plain 87 % -> 83 %; the refit costs about 8x the steps (57 s against 7 s per edit, one thread).
    # With subject_tokens = 1 no continuation is decoded: each question's last position is the kept one.
    subject_questions: int = 4
    # Session 24, 16 on 100 routed validation edits: chat questions about the subject answered as unedited 20 % against
    # 4 (plain 68 both), rephrasings 78 / 92 % against 82 / 92, fluency 0.946x against 0.97x (under the 0.95x target),
    # 54.9 steps against 41.3 (65 at the cap); 16 kept by the KL alone (subject_stop=False): subject questions answered as
    # unedited 49 / 9 % (plain / chat), rephrasings 74 / 93 %, fluency 0.90x, subject hijack 8 / 11 % against 2 / 1:
    # neither adopted.
    subject_tokens: int = 8
    # Session 22, weight 2 on 100 routed validation edits: rephrasings 83 / 94 % against 82 / 92, questions about the
    # subject answered as unedited 64 / 6 % against 68 / 4, fluency 0.95x against 0.97x: within noise, not adopted.
    subject_weight: float = 4.0
    # Stop only once the kept subject questions' argmaxes are the base's (False: the KL term alone).
    # Session 18 added the first token of 4 subject questions to the quick fit (QUICK with
    # subject_questions=4, subject_tokens=1, subject_stop=False) on 100 routed validation edits: chat
    # questions about the subject answered with the target 81 % -> 30 % with weight 1 and 17 % with
    # weight 4, but chat rephrasings 94 % -> 76 / 75 % and 4-7x the quick fit's time
    # (docs/RESULTS.md): not adopted.
    subject_stop: bool = True
    # Keep a plain (not chat) subject question's first answer token where the base stops there (EOS or a
    # line break: asked a bare question, SmolLM2 mostly ends or breaks the line, "What is {} known for?"
    # -> EOS in 37 of 40 validation subjects). Kept, it teaches the fitted model that a bare question
    # about the subject ends at once, and the edit's own bare rephrasings then answer nothing
    # ("From what country was Helene Gotthold?" -> "\n"). False: the base's text after that first
    # token is still kept, the choice to stop is not (no effect with subject_tokens = 1, whose kept
    # first token is never decoded). Session 22, on 100 routed validation edits: empty
    # bare rephrasings 5 -> 3, rephrasings 83 / 91 % against 82 / 92 (plain / chat; 3 gained and 2 lost
    # plain), but bare questions about the subject answered with the target 19 % against 2 %, and
    # answered as unedited 36 % against 68 %: the kept stop is what holds them. Not adopted.
    subject_plain_stop: bool = True
    # Questions of the edit's own shape about its subject and another relation ("The founder of
    # Peru is", "What is the official language of Peru?"; `relation_questions`), their first
    # `relation_tokens` answer tokens kept with the subject questions' weight (0: off). With
    # `relation_stop` the refit also stops only once their greedy continuations are the base's.
    # On the first 9 validation edits of "relval" (bench/results/lifelong_val.md) 4 questions,
    # 8 tokens, stopping on them (then in one anchor with the subject questions) took another
    # relation's answers from 89 / 89 % hijacked (plain / chat) to 78 / 67 %, at twice the
    # refit's time: not adopted. Session 15, on the default: 12 questions, 3 tokens, KL only took
    # 30 relval edits' hijack from 76.7 / 76.7 to 53.3 / 46.7 %, and 30 validation edits' own
    # rephrasings from 80 / 100 to 63.3 / 70 % (4 questions: 73.3 / 63.3 and 70 / 73.3): not
    # adopted, each relation question saved cost about one rephrasing (docs/RESULTS.md).
    relation_questions: int = 0
    relation_tokens: int = 8
    relation_stop: bool = True
    # The subject and relation anchors' distributions restricted to these many of the base's likeliest
    # tokens per position (their union, and the edit's answer tokens), renormalized there (0: the whole
    # vocabulary; `keep` always reads the whole vocabulary).
    # On 30 routed validation edits (bench/results/lifelong_val.md) 64 against the whole vocabulary:
    # rephrasings 86.7 / 83.3 % against 83.3 / 80.0 % (plain / chat), fluency 0.60x against 0.57x,
    # the same locality and subject figures, 13.4 against 18.1 s per edit (two runs at once). Its
    # argmax check, which decides when the refit stops, then looks at those tokens only; measured
    # by generation, the subject questions kept their answers as often as with the whole vocabulary.
    anchor_vocab: int = 64
    # A kept subject (or relation) question's position still agrees when the fitted model's argmax is a
    # token the base gave a log-probability within `tie_margin` nats of its own argmax's (0: only the
    # base's argmax agrees; above 0, `RefitResult.kept` no longer means the base's greedy text).
    # Most of a refit's steps wait for that agreement, and late in a refit every disagreement is such
    # a near-tie (below 0.5 nats on 6 validation edits). On 100 routed validation edits (session 18,
    # bench/results/lifelong_val.md) 0.3 took the steps from 41.3 to 22.5 (none at the cap, against
    # 21) and the refit's time to 0.71x, but plain rephrasings from 83 to 79 % and fluency from 0.97x
    # to 0.91x (chat 94 % both): the steps spent waiting seem to make the answer hold. Not adopted.
    tie_margin: float = 0.0
    # Mark the fitted delta narrow (`routing.MemoryEntry.narrow`): the router then sends it only the
    # questions worded like its own beyond the subject. For a fit that keeps nothing about the subject
    # (QUICK): without it, its edit answers most other questions about the subject with the target
    # (81 % in chat on 100 validation edits) until the full refit lands.
    narrow_scope: bool = False
    max_length: int = 128
    seed: int = 0


# The instant stage (session 15): the editor's delta alone answers the edit's own question by
# generation in few cases (10 / 0 % plain / chat on 20 validation edits), so the service fits it
# briefly before it publishes the edit, and the full refit (RefitConfig()) follows in the background,
# from the editor's delta again. Only the edit's own question (plain and chat) and any rephrasings
# the caller gave, no made variants and nothing kept, a few large steps, a 0.5 margin. On those 20
# edits (runs beside two benches): Rel 100 / 100 and rephrasings 90 / 95 % by generation, 4.1 steps.
# The editor and the fit together: 1.21x one forward+backward of the model (bench/lifelong_speed.py,
# an edit sent without rephrasings, on a quiet machine; session 15, before hooks.PrefixCache and the
# low-rank corrections in hooks.MLPTop: 1.51x). What a user meets before the full refit
# lands: bench/lifelong.py --methods instructedit/routed+quick. Other questions about the subject
# are not kept by it: that is the full refit's work. So its delta is narrow (session 19): on 100
# validation edits, the other questions about the subject answered as unedited 100 / 100 % (plain /
# chat; 34 / 0 % routed as wide as the refit), held-back rephrasings 44 / 49 % (82 / 94 %) until
# the refit lands (docs/RESULTS.md).
QUICK = RefitConfig(steps=30, lr=3e-2, variants=0, keep=0, subject_questions=0, min_prob=0.5, narrow_scope=True)


@dataclass(frozen=True)
class RefitResult:
    delta: Delta
    steps: int
    took: bool  # every asked form now answers the target, then stops
    kept: bool = True  # every other question about the subject continues as on the base weights


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


# Other questions about an edit's subject, kept as the base model answers them
# (written for this; the benches and the service measure on different ones,
# `editor_core.metrics.SUBJECT_PROBES`). Not a bare "{} is" (in the first four
# until session 14): it is how many edits and their rephrasings begin ("Arun
# Nehru is known for"), and keeping its base continuation taught the edit's own
# rephrasings, asked in the chat template, to answer with the base's sentence
# about the subject ("Arun Nehru is a legendary figure in Indian politics...").
# On 30 routed validation edits, chat rephrasings 100 % without it against 80 %
# with it (bench/results/lifelong_val.md).
SUBJECT_QUESTIONS = (
    "What is {} known for?",
    "Give me one fact about {}.",
    "Here is a short note on {}:",
    "Who or what is {}?",
    "Write a sentence about {}.",
)


# Relations that many subjects have (people, places, works, organisations), asked
# about an edit's subject in the two shapes edits come in (written for this).
RELATIONS = (
    *("country", "place of birth", "occupation", "native language", "official language", "capital city"),
    *("founder", "headquarters", "genre", "author", "date of birth", "field of work", "employer"),
    *("religion", "continent", "parent company", "record label", "original language", "sport"),
    *("manufacturer", "nationality", "position", "spouse", "home town"),
)
_GLUE = {"of", "the", "a", "an", "is", "was", "in", "what", "which", "who", "where", "by", "to"}


def relation_questions(prompt: str, subject: str, n: int, seed: int = 0) -> list[str]:
    """`n` questions about `subject` and relations the edit's prompt does not name
    (none of a relation's words is a word of the prompt outside the subject),
    alternately "The {relation} of {subject} is" and "What is the {relation} of
    {subject}?". Deterministic per prompt."""
    own = set(re.findall(r"[a-z]+", prompt.lower())) - set(re.findall(r"[a-z]+", subject.lower())) - _GLUE
    free = [r for r in RELATIONS if not set(r.split()) & own]
    picked = random.Random(f"{seed}:relations:{prompt}").sample(free, min(n, len(free)))
    shapes = ("The {} of {} is", "What is the {} of {}?")
    return [shapes[k % 2].format(r, subject) for k, r in enumerate(picked)]


def variants(prompt: str, n: int, seed: int = 0, drops: str = "any") -> list[str]:
    """`n` variants of `prompt`: alternately after an unrelated sentence, and with
    about a quarter of its droppable words left out (`RefitConfig.variant_drops`;
    capitalized words, most often the subject's name, and the first word always
    stay). Deterministic per prompt."""
    rng = random.Random(f"{seed}:{prompt}")
    words = prompt.split()
    droppable = [i for i, w in enumerate(words) if i > 0 and not w[:1].isupper()]
    if drops not in ("any", "glue", "none"):
        raise ValueError(f"variant drops {drops!r}: any, glue or none")
    if drops == "glue":
        droppable = [i for i in droppable if words[i].lower().strip("?.,:;!") in _GLUE]
    elif drops == "none":
        droppable = []
    out: list[str] = []
    for k in range(n):
        if k % 2 == 0 or not droppable:
            out.append(f"{PREFIXES[rng.randrange(len(PREFIXES))]} {prompt}")
        else:
            drop = set(rng.sample(droppable, max(1, len(droppable) // 4)))
            out.append(" ".join(w for i, w in enumerate(words) if i not in drop))
    return out


def question_forms(
    tokenizer,
    prompt: str,
    rephrasings: tuple[str, ...] = (),
    *,
    chat: bool = True,
    n_variants: int = 0,
    seed: int = 0,
    drops: str = "any",
) -> list[str]:
    """Every way the edit's question is asked that the refit fits."""
    asked = [prompt, *rephrasings, *variants(prompt, n_variants, seed, drops)]
    forms = list(asked)
    if chat:
        forms += [chat_prompt(tokenizer, q) for q in asked]
    return forms


class _LeaveOutEnd(LogitsProcessor):
    """EOS out of reach in some rows of a batch (theirs is a text forced on past its end)."""

    def __init__(self, rows: list[int], eos: set[int]):
        self.rows, self.eos = rows, sorted(eos)
        self.out: torch.Tensor | None = None  # (batch, vocabulary): where EOS is out of reach, made on the scores' device

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if not (self.rows and self.eos):
            return scores
        if self.out is None:
            self.out = torch.zeros(scores.shape, dtype=torch.bool, device=scores.device)
            self.out[torch.tensor(self.rows)[:, None], torch.tensor(self.eos)[None, :]] = True
        # not in place: generate keeps this very tensor as the step's logits (`output_logits`)
        return scores.masked_fill(self.out, -float("inf"))


def _first_token_rows(tokenizer, texts: list[str]) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, a placeholder) per text, for an anchor that keeps the first answer token alone:
    it reads the base's distribution at the prompt's last position, so nothing needs decoding, and
    the placeholder (the last id again) sits where no kept position reads it."""
    ids, mask = encode_prompts(tokenizer, texts)
    return [(row[m.bool()].tolist(), row[-1:].tolist()) for row, m in zip(ids, mask)]


@torch.no_grad()
def _base_continuations(
    model, tokenizer, texts: list[str], n_tokens: Sequence[int], past_eos: Sequence[bool]
) -> list[tuple[list[int], list[int], torch.Tensor]]:
    """(prompt ids, the model's greedy continuation ids, its logits at each of them) of each text,
    in one batch: `n_tokens[i]` with EOS out of reach where `past_eos[i]`, else at most `n_tokens[i]`,
    up to and including EOS. The logits (one row per continuation token, the model's own, before
    any change to them) are the base's distributions that an anchor keeps."""
    if not texts:
        return []
    ids, mask = encode_prompts(tokenizer, texts)
    device = next(model.parameters()).device
    eos = end_of_text_ids(model, tokenizer)
    out = model.generate(
        input_ids=ids.to(device),
        attention_mask=mask.to(device),
        max_new_tokens=max(n_tokens),
        do_sample=False,
        use_cache=True,
        output_logits=True,
        return_dict_in_generate=True,
        logits_processor=LogitsProcessorList([_LeaveOutEnd([i for i, p in enumerate(past_eos) if p], eos)]),
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
    )
    logits = torch.stack(out.logits, dim=1)  # (rows, steps, vocabulary)
    triples = []
    for i in range(len(texts)):
        cont = out.sequences[i, ids.shape[1] :].tolist()[: n_tokens[i]]
        if not past_eos[i]:
            stop = next((k for k, t in enumerate(cont) if t in eos), None)
            cont = cont if stop is None else cont[: stop + 1]
        triples.append((ids[i][mask[i].bool()].tolist(), cont, logits[i, : len(cont)].clone()))  # not views that hold the whole batch
    return triples


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
    subject: str = "",
    more: Sequence[tuple[str, str, tuple[str, ...], str]] = (),
) -> RefitResult:
    """`delta` plus a fitted correction; `model` must hold the base weights of `spec`'s params.
    `subject` is the edit's subject (empty: guessed from the prompt, `subject_of`);
    `more` holds further (prompt, target, rephrasings, subject) of the same edit (a batch edit)."""
    forms, answers, past, about, others = [], [], [], [], []
    bare = set()  # the subject questions asked plainly
    for p, t, reph, subj in [(prompt, target, tuple(rephrasings), subject), *more]:
        asked = question_forms(
            tokenizer, p, reph, chat=config.chat, n_variants=config.variants, seed=config.seed, drops=config.variant_drops
        )
        forms += asked
        answers += [t + end_of_turn(tokenizer)] * len(asked)
        if config.keep:
            own = [p, chat_prompt(tokenizer, p)] if config.chat else [p]
            past += [f + join_answer(f, t) for f in own]
        name = subject_of(p, subj)
        if name and config.subject_tokens:
            qs = [q.format(name) for q in SUBJECT_QUESTIONS[: config.subject_questions]]
            bare.update(qs)
            about += qs + ([chat_prompt(tokenizer, q) for q in qs] if config.chat else [])
            others += _other_relations(model, tokenizer, p, name, config)
    fitted = list(spec.edit_params[-config.n_weights :])
    # Blocks below the first fitted one never change here: run them once, with the edit's delta.
    first = min(spec.block_of(p) for p in fitted)
    base = {p: model.get_parameter(p) for p in spec.edit_params}
    fixed = {p: (delta.dense(p).to(base[p].device) if delta is not None and p in delta.factors else None) for p in base}
    below = {p: (base[p].float() + fixed[p]).to(base[p].dtype) for p in base if spec.block_of(p) < first and fixed[p] is not None}
    base = {p: w for p, w in base.items() if spec.block_of(p) >= first}
    runner = SplitRunner(model, dataclasses.replace(spec, first_edit_layer=first))

    batch = encode_pairs(tokenizer, forms, answers, config.max_length).to(model.device)
    # the chat forms all begin with the template's fixed text: its blocks below the cut are run once per model
    said = chat_prefix(tokenizer) if config.chat else ""
    prefix = tokenizer(said)["input_ids"] if said else None
    cut = runner.bottom(batch.input_ids, batch.attention_mask, overrides=below, prefix=prefix)
    mask = batch.answer_mask
    rows, labels = mask.nonzero()[:, 0], batch.labels[mask]
    gen = torch.Generator().manual_seed(config.seed)
    corr = {}
    for p in fitted:
        out_dim, in_dim = base[p].shape
        a = torch.zeros(out_dim, config.rank, device=base[p].device, requires_grad=True)
        b = (torch.randn(config.rank, in_dim, generator=gen) * config.init_scale).to(base[p].device).requires_grad_(True)
        corr[p] = (a, b)
    opt = torch.optim.Adam([t for pair in corr.values() for t in pair], lr=config.lr)

    # base + the editor's delta; each step's corrections A @ B go on top as low-rank parts, never made dense here
    start = {p: (w.float() if fixed[p] is None else w.float() + fixed[p]).to(w.dtype) for p, w in base.items()}
    top = MLPTop(runner, cut, mask, fitted, start)
    anchors = []  # (anchor, weight, whether the refit must restore its argmax before it stops)
    watch = set(labels.tolist())  # the answer's tokens: what a fitted model is most likely to say too often
    restricted = {"vocab": config.anchor_vocab, "watch": watch, "margin": config.tie_margin}  # the subject and relation anchors
    about = list(dict.fromkeys(about))
    # the base's own continuations of both, in one batch (their decoding steps shared); a first token
    # alone needs no decoding: the anchor reads the base's distribution at each question's end itself
    decoded = about if config.subject_tokens > 1 else []
    lengths = [config.keep] * len(past) + [config.subject_tokens] * len(decoded)
    conts = _base_continuations(model, tokenizer, past + decoded, lengths, [True] * len(past) + [False] * len(decoded))
    if about and not decoded:
        conts += _first_token_rows(tokenizer, about)
    if about and decoded and not config.subject_plain_stop:
        eos = end_of_text_ids(model, tokenizer)
        conts = conts[: len(past)] + _past_a_stop(tokenizer, conts[len(past) :], [q in bare for q in decoded], eos)
    if past:
        eos = end_of_text_ids(model, tokenizer)
        # over the whole vocabulary: past EOS a fitted model moves its mass to tokens the base never
        # considers there (the chat template's <|im_start|>), which a restricted KL cannot see
        anchor = _Anchor(runner, conts[: len(past)], below, fitted, start, eos=eos, vocab=0, prefix=prefix)
        anchors.append((anchor, config.keep_weight, False))
    if conts[len(past) :]:  # (none left where every subject question was a bare one the base ends at once)
        anchor = _Anchor(runner, conts[len(past) :], below, fitted, start, prefix=prefix, **restricted)
        anchors.append((anchor, config.subject_weight, config.subject_stop))
    if others:  # their continuations were generated when they were chosen
        anchor = _Anchor(runner, others, below, fitted, start, prefix=prefix, **restricted)
        anchors.append((anchor, config.subject_weight, config.relation_stop))

    shared = [anchor for anchor, _, _ in anchors if anchor.reads_the_head]
    steps, took, kept = 0, False, True
    for steps in range(config.steps + 1):
        with torch.enable_grad():
            # the answers' logits and those of every anchor over the whole vocabulary in one product with the
            # head's weight, read once forward and once backward instead of once per part (0.89x a refit's time)
            hidden = [top.hidden(start, corr)] + [anchor.top.hidden(start, corr) for anchor in shared]
            logits, *whole = runner.head(torch.cat(hidden)).split([len(h) for h in hidden])
            logp = torch.log_softmax(logits.float(), dim=-1).gather(1, labels[:, None])[:, 0]
            took = bool((logits.argmax(-1) == labels).all()) and float(logp.detach().min().exp()) >= config.min_prob
            loss = row_mean(-logp, rows, len(forms)).mean()
            kept = True
            for anchor, weight, must_agree in anchors:
                if anchor in shared:
                    k = shared.index(anchor)
                    divergence, agrees = anchor.divergence(hidden[1 + k], whole[k])
                else:
                    divergence, agrees = anchor(start, corr)
                loss = loss + weight * divergence
                kept = kept and (agrees or not must_agree)
            if (took and kept) or steps == config.steps:
                break
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
    meta.update({"refit_steps": steps, "refit_took": took, "refit_kept": kept})
    meta.pop("scope", None)  # a refit of a narrow delta is narrow only if this fit is
    if config.narrow_scope:
        meta["scope"] = NARROW
    return RefitResult(Delta(factors, meta), steps, took, kept)


def _past_a_stop(tokenizer, conts: list, plain: list[bool], eos: set[int]) -> list:
    """The subject questions' continuations, where a plain question's begins with a stop (EOS or a line
    break) without that first token: it goes into the kept text's prompt, and what follows it is kept
    (nothing is, if it was EOS). A chat question's first token is the assistant's first word: kept."""
    out = []
    for bare, (ids, cont, logits) in zip(plain, conts):
        stop = bool(cont) and (cont[0] in eos or "\n" in tokenizer.decode(cont[:1]))
        if not (bare and stop):
            out.append((ids, cont, logits))
        elif cont[0] not in eos and len(cont) > 1:
            out.append((ids + cont[:1], cont[1:], logits[1:]))
    return out


def refit_records(model, tokenizer, spec: ModelSpec, records: Sequence, delta: Delta | None, config: RefitConfig) -> RefitResult:
    """`refit` for one edit of one or more records (`EditRecord`s; a batch edit is one delta)."""
    first, *rest = records
    more = [(r.prompt, r.target_new, tuple(r.rephrase_prompts), r.subject) for r in rest]
    return refit(
        model,
        tokenizer,
        spec,
        first.prompt,
        first.target_new,
        delta,
        config,
        rephrasings=tuple(first.rephrase_prompts),
        subject=first.subject,
        more=more,
    )


def _other_relations(model, tokenizer, prompt: str, subject: str, config: RefitConfig) -> list[tuple[list[int], list[int], torch.Tensor]]:
    """(prompt ids, the base's continuation ids, its logits there) of `relation_questions` questions about
    another relation of the subject, plain and in the chat template, less any the base
    model answers with its own answer to the edit's prompt (the edit's relation in other
    words, "The capital city of Peru is" for "Which city is Peru's capital?")."""
    if not config.relation_questions:
        return []
    qs = relation_questions(prompt, subject, config.relation_questions, config.seed)
    chat = [chat_prompt(tokenizer, q) for q in qs] if config.chat else []
    texts = [prompt, *qs, *chat]
    (_, own, _), *conts = _base_continuations(model, tokenizer, texts, [config.relation_tokens] * len(texts), [False] * len(texts))

    def words(text: str) -> str:  # without glue words, so that "the" or "is" alone never matches
        return " ".join(w for w in re.findall(r"\w+", text.casefold()) if w not in _GLUE)

    # the base's answer to the edit's prompt: the first words of its first clause that says something
    said = re.split(r"[.,;\n]", tokenizer.decode(own, skip_special_tokens=True))
    answer = " ".join(next((words(c) for c in said if words(c)), "").split()[:3])
    plain = [words(tokenizer.decode(c, skip_special_tokens=True)) for _, c, _ in conts[: len(qs)]]
    keep = [not answer or f" {answer} " not in f" {text} " for text in plain]
    return [pair for k, pair in enumerate(conts) if keep[k % len(qs)]]


_GENERATED_LOGITS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> whether generate's logits are its head's


class _Anchor:
    """Texts that the refit keeps as the base model has them: the base's
    next-token distributions at each token of its own continuation (the ids in
    `eos` left out, as in a text forced on past the answer), the KL of a fitted
    model's from them, and whether the fitted model's argmax still agrees. The
    base's logits come with the continuations where `_base_continuations` made
    them (its decoding computed them), else from a pass of the base model here;
    the first anchor of a model makes both and compares them, and a model whose
    generated logits are not its head's output is always run here.

    Per position, with p the base's distribution, z the fitted logits and h the
    head's input (z = W h + b):  KL = sum p log p - p . z + logsumexp(z),  and
    p . z = h . (W^T p) + p . b, so W^T p is computed once here and a step pays
    the head and one normalizer, not the KL's products over the vocabulary.
    With `vocab`, p is cut to the base's likeliest tokens (and `watch`) and
    renormalized there, and the head runs on those rows of W alone; the argmax
    check then compares argmaxes among those tokens only. With `margin`, the
    fitted argmax also agrees where the base put it within `margin` nats of
    its own (a near-tie, `RefitConfig.tie_margin`). The head's rows are
    held in float32: in bf16 the two near-equal terms W^T q and W^T p of the
    gradient would differ mostly by rounding."""

    def __init__(
        self,
        runner: SplitRunner,
        pairs: Sequence[tuple[list[int], list[int]] | tuple[list[int], list[int], torch.Tensor]],
        below: dict[str, torch.Tensor],
        fitted: list[str],
        start: dict[str, torch.Tensor],
        eos: set[int] = frozenset(),
        vocab: int = 0,
        watch: set[int] = frozenset(),
        prefix: Sequence[int] | None = None,
        margin: float = 0.0,
    ):
        width = max(len(p) + len(c) for p, c, *_ in pairs)
        ids = torch.zeros((len(pairs), width), dtype=torch.long)
        attention = torch.zeros_like(ids)
        mask = torch.zeros((len(pairs), width), dtype=torch.bool)
        for i, (p, c, *_) in enumerate(pairs):
            row = p + c
            ids[i, : len(row)] = torch.tensor(row)
            attention[i, : len(row)] = 1
            mask[i, len(p) - 1 : len(row) - 1] = True  # the positions that predict the continuation
        device = runner.model.device
        mask = mask.to(device)
        ids, attention = ids.to(device), attention.to(device)
        cut = runner.bottom(ids, attention, overrides=below, prefix=prefix)
        self.top = MLPTop(runner, cut, mask, fitted, start)
        self.eos = torch.tensor(sorted(eos), dtype=torch.long, device=device)
        self.cols: torch.Tensor | None = None  # the restricted vocabulary, if any
        bias = getattr(runner.head, "bias", None)
        self.weight, self.bias = runner.head.weight.float(), (bias.float() if bias is not None else None)
        with torch.no_grad():  # the base model's distributions: the edit's delta left out everywhere
            given = torch.cat([pair[2] for pair in pairs]).to(device) if all(len(pair) == 3 for pair in pairs) else None
            trusted = _GENERATED_LOGITS.get(runner.model)
            if given is not None and trusted:  # its logits as it generated the continuations
                logits = given
            else:
                plain = cut if not below else runner.bottom(ids, attention, prefix=prefix)
                logits = runner.logits(runner.top(plain)[0], mask)
                if given is not None and trusted is None:
                    # once per model: does generate's output equal the head's? (not where the model
                    # reshapes its logits after the head: Gemma 2's soft cap, Granite's scaling)
                    scale = float(logits.float().abs().max())
                    _GENERATED_LOGITS[runner.model] = bool(((given.float() - logits.float()).abs() <= 1e-2 * scale + 1e-4).all())
            reference = self._masked(logits.float()).log_softmax(-1)
            if vocab:  # only the columns where the base puts its mass, and the answer's tokens
                likely = reference.topk(min(vocab, reference.shape[1]), dim=-1).indices.flatten()
                cols = torch.cat([likely, torch.tensor(sorted(watch), dtype=torch.long, device=device)]).unique()
                cols = cols[~torch.isin(cols, self.eos)]
                self.cols = cols
                reference = reference[:, cols].log_softmax(-1)
                self.weight = self.weight[cols]
                self.bias = self.bias[cols] if self.bias is not None else None
                self.eos = self.eos[:0]
            probs = reference.exp()
            self.neg_entropy = (probs * reference).sum(-1)  # sum p log p, per position
            self.mean_weight = probs @ self.weight  # W^T p, per position
            self.mean_bias = probs @ self.bias if self.bias is not None else 0.0
            self.argmax = reference.argmax(-1)
            # the tokens that agree at each position: the base's argmax and any within `margin` of it
            self.agreeing = reference >= reference.gather(1, self.argmax[:, None]) - margin

    def _masked(self, logits: torch.Tensor) -> torch.Tensor:
        if not len(self.eos):
            return logits
        return logits.index_fill(1, self.eos, -1e4)  # out of the distribution, but finite (no NaN in the gradient)

    def __call__(self, overrides: dict[str, torch.Tensor], low_rank: LowRank | None = None) -> tuple[torch.Tensor, bool]:
        return self.divergence(self.top.hidden(overrides, low_rank))

    @property
    def reads_the_head(self) -> bool:
        """Whether its logits are the model's head itself (the whole vocabulary, in the head's
        own float32 weights): a caller may then compute them with other rows' in one product."""
        head = self.top.runner.head
        return self.cols is None and self.weight is head.weight and self.bias is getattr(head, "bias", None)

    def divergence(self, hidden: torch.Tensor, logits: torch.Tensor | None = None) -> tuple[torch.Tensor, bool]:
        """(the KL, whether the argmaxes agree) from the head's input at the anchor's positions
        (`top.hidden`), and its logits where the caller computed them (`reads_the_head`)."""
        h = hidden.float()
        logits = self._masked(torch.nn.functional.linear(h, self.weight, self.bias) if logits is None else logits)
        agrees = bool(self.agreeing.gather(1, logits.detach().argmax(-1)[:, None]).all())
        cross = (h * self.mean_weight).sum(-1) + self.mean_bias
        # logsumexp(z) as z_k - log_softmax(z)_k at the base's argmax k (torch's own
        # logsumexp is several times slower than log_softmax on the CPU)
        k = self.argmax[:, None]
        log_normalizer = (logits.gather(1, k) - torch.log_softmax(logits, dim=-1).gather(1, k))[:, 0]
        kl = self.neg_entropy - cross + log_normalizer
        return kl.sum() / kl.shape[0], agrees


@torch.inference_mode()
def answers_exactly(model, tokenizer, prompts: Sequence[str], targets: Sequence[str], max_length: int = 128) -> list[bool]:
    """Per prompt: is every token of `target + EOS` the model's argmax given the
    ones before it? Then greedy decoding says exactly the target and stops."""
    answers = [t + end_of_turn(tokenizer) for t in targets]
    batch = encode_pairs(tokenizer, list(prompts), answers, max_length).to(model.device)
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False).logits
    hit = (logits.argmax(-1) == batch.labels) | ~batch.answer_mask
    return hit.all(dim=1).tolist()

"""Knowledge-editing metrics, computed the way the field (ROME/MEMIT, EasyEdit)
computes them.

Per-example scores, each in [0, 1] unless stated otherwise:

* Reliability / Generalization / Portability -- ``teacher_forced_accuracy``:
  feed ``prompt + answer`` and take, over the answer tokens, the fraction whose
  argmax prediction (given the gold prefix) equals the gold token. This is
  EasyEdit's ``test_prediction_acc``.
* Locality -- ``answer_argmax`` on the unedited model and on the edited one over
  the same (prompt, answer) pairs, then ``agreement``: the fraction of answer
  positions where the two argmax tokens agree (EasyEdit's locality: compare
  pre- and post-edit predicted tokens, not the gold answer).
* ``generation_exact_match``: greedy-generate a short continuation and check
  that it begins with the answer (see ``exact_match`` for the exact rule).
* Fluency -- ``fluency``: the weighted 2-/3-gram entropy (bits) of a greedy
  continuation (ROME's ``n_gram_entropy``). This one is *not* in [0, 1].

``summarize`` turns a list of per-example scores into a percentage (as in the
papers' tables; for fluency this gives entropy x 100, the scale ROME reports).

All teacher-forced batches come from ``tokens.encode_pairs`` and generation
prompts from ``tokens.encode_prompts``, so every metric agrees with the edit
losses on where the answer starts and how it is tokenized.
"""

from __future__ import annotations

import copy
import math
import re
import string
from collections import Counter
from typing import Iterator, Sequence

import torch
from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList

from editor_core.tokens import IGNORE, encode_pairs, encode_prompts, end_of_text_ids, join_answer

__all__ = [
    "token_accuracy_from_logits",
    "answer_argmax_from_logits",
    "agreement",
    "word_tokenize",
    "ngram_entropy",
    "normalize_answer",
    "exact_match",
    "teacher_forced_accuracy",
    "answer_argmax",
    "locality",
    "generate_greedy",
    "generation_exact_match",
    "fluency",
    "summarize",
    "cut_answer",
    "answer_exact",
    "answer_contains",
    "generate_answers",
]


# --------------------------------------------------------------------------
# Pure cores (no model)
# --------------------------------------------------------------------------


def token_accuracy_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per example, the mean over scored positions (``labels != IGNORE``) of
    ``argmax(logits) == labels``. ``labels`` are already shifted, as in
    ``PairBatch``: ``labels[:, t]`` is what position t must predict.

    Returns a float tensor of shape (B,) on the logits' device. A row with no
    scored position gives NaN (``encode_pairs`` never produces one except for
    an empty prompt with a tokenizer that adds no BOS)."""
    if logits.shape[:2] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} do not match labels {tuple(labels.shape)}")
    labels = labels.to(logits.device)
    mask = labels != IGNORE
    hits = (logits.argmax(dim=-1) == labels) & mask
    return hits.sum(dim=1).float() / mask.sum(dim=1).float()


def answer_argmax_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> list[torch.Tensor]:
    """Per example, the argmax tokens at the scored positions (in order), on CPU."""
    if logits.shape[:2] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} do not match labels {tuple(labels.shape)}")
    mask = (labels != IGNORE).to(logits.device)
    pred = logits.argmax(dim=-1)
    return [pred[i][mask[i]].cpu() for i in range(pred.shape[0])]


def agreement(pre: Sequence[torch.Tensor], post: Sequence[torch.Tensor]) -> list[float]:
    """Per example, the fraction of positions where ``pre`` and ``post`` hold the
    same token. Both must have the same number of examples and, per example,
    the same length (they come from the same (prompt, answer) pairs)."""
    if len(pre) != len(post):
        raise ValueError(f"{len(pre)} pre-edit rows but {len(post)} post-edit rows")
    out: list[float] = []
    for i, (a, b) in enumerate(zip(pre, post)):
        a, b = torch.as_tensor(a).flatten().cpu(), torch.as_tensor(b).flatten().cpu()
        if a.numel() != b.numel():
            raise ValueError(f"row {i}: {a.numel()} pre-edit tokens but {b.numel()} post-edit tokens")
        if a.numel() == 0:
            raise ValueError(f"row {i}: no tokens to compare")
        out.append((a == b).float().mean().item())
    return out


# NLTK word_tokenize-like: split off punctuation and clitics ("don't" -> do n't,
# "it's" -> it 's), keep numbers like 3.14 / 1,000 and "..." whole. A close
# approximation of NLTK's Treebank tokenizer, without the dependency.
_WORD_RE = re.compile(
    r"""
    \d+(?:[.,]\d+)+         # numbers with separators
    | \w+(?=n't\b)          # "do" of "don't"
    | n't\b                 # "n't"
    | '\w+                  # clitics: 's 're 'll 'd 've 'm
    | \w+                   # words
    | \.\.\.                # ellipsis
    | --                    # dash
    | [^\w\s]               # any other single punctuation mark
    """,
    re.VERBOSE,
)


def word_tokenize(text: str) -> list[str]:
    """Word tokens for n-gram statistics (regex approximation of ``nltk.word_tokenize``)."""
    return _WORD_RE.findall(text)


def ngram_entropy(text: str, ns: Sequence[int] = (2, 3), weights: Sequence[float] = (2 / 3, 4 / 3)) -> float:
    """ROME/MEMIT's fluency measure (``compute_n_gram_entropy``): for each n in
    ``ns``, the entropy in bits of the frequency distribution of the text's word
    n-grams; then the weighted mean ``sum(w * H_n) / sum(w)``. With the default
    weights (summing to 2) this equals ROME's ``mean(w * H_n)``.

    A text with fewer than n words has no n-grams; its H_n is taken as 0 (ROME
    would produce NaN there)."""
    if len(ns) != len(weights):
        raise ValueError("ns and weights must have the same length")
    tokens = word_tokenize(text)
    total = 0.0
    for n, w in zip(ns, weights):
        counts = Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
        m = sum(counts.values())
        h = -sum((c / m) * math.log2(c / m) for c in counts.values()) if m else 0.0
        total += w * h
    return total / float(sum(weights))


_ARTICLES_RE = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)


def normalize_answer(s: str) -> str:
    """SQuAD normalization: lowercase, delete punctuation, drop the articles
    a/an/the, collapse whitespace."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES_RE.sub(" ", s)
    return " ".join(s.split())


def exact_match(generated: str, answer: str) -> float:
    """1.0 if the generated continuation *begins with* the answer, else 0.0.

    Rule: both are SQuAD-normalized (``normalize_answer``); it is a match when
    the normalized generation equals the normalized answer, or starts with it
    followed by a space -- i.e. the continuation may go on after the answer,
    but the answer must end at a word boundary ("Paris is nice" matches
    "Paris"; "Parisian" does not). An answer that normalizes to nothing
    matches only a generation that also normalizes to nothing."""
    g, a = normalize_answer(generated), normalize_answer(answer)
    if not a:
        return float(not g)
    return float(g == a or g.startswith(a + " "))


def summarize(values: Sequence[float]) -> float | None:
    """Mean x 100 (a percentage for [0, 1] scores); None when there is nothing."""
    values = list(values)
    if not values:
        return None
    return 100.0 * sum(float(v) for v in values) / len(values)


# --------------------------------------------------------------------------
# Model-based
# --------------------------------------------------------------------------


def _device(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:  # pragma: no cover - parameterless model
        return torch.device("cpu")


def _chunks(n: int, batch_size: int) -> Iterator[slice]:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


def _check_pairs(prompts: Sequence[str], answers: Sequence[str]) -> None:
    if len(prompts) != len(answers):
        raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers")


def _pair_logits(model, tokenizer, prompts: list[str], answers: list[str]):
    batch = encode_pairs(tokenizer, prompts, answers)
    if bool((batch.answer_mask.sum(dim=1) == 0).any()):
        raise ValueError("an answer has no scored token (empty prompt and no BOS token?)")
    batch = batch.to(_device(model))
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False).logits
    return logits, batch.labels


@torch.inference_mode()
def teacher_forced_accuracy(
    model, tokenizer, prompts: Sequence[str], answers: Sequence[str], batch_size: int = 16
) -> list[float]:
    """Per example, the fraction of answer tokens the model predicts (argmax)
    given the prompt and the gold answer prefix. Reliability, Generalization
    and Portability are this metric on their respective prompt sets."""
    _check_pairs(prompts, answers)
    out: list[float] = []
    for sl in _chunks(len(prompts), batch_size):
        logits, labels = _pair_logits(model, tokenizer, list(prompts[sl]), list(answers[sl]))
        out.extend(token_accuracy_from_logits(logits, labels).tolist())
    return out


@torch.inference_mode()
def answer_argmax(
    model, tokenizer, prompts: Sequence[str], answers: Sequence[str], batch_size: int = 16
) -> list[torch.Tensor]:
    """Per example, the model's argmax tokens at the answer positions (teacher
    forced on the given answer), as CPU tensors. Run it before and after an
    edit and compare with ``agreement`` to get Locality."""
    _check_pairs(prompts, answers)
    out: list[torch.Tensor] = []
    for sl in _chunks(len(prompts), batch_size):
        logits, labels = _pair_logits(model, tokenizer, list(prompts[sl]), list(answers[sl]))
        out.extend(answer_argmax_from_logits(logits, labels))
    return out


def locality(
    pre_argmax: Sequence[torch.Tensor],
    model,
    tokenizer,
    prompts: Sequence[str],
    answers: Sequence[str],
    batch_size: int = 16,
) -> list[float]:
    """Locality of an edited ``model``: ``agreement`` between ``pre_argmax``
    (``answer_argmax`` of the unedited model on the same pairs) and the edited
    model's ``answer_argmax``."""
    return agreement(pre_argmax, answer_argmax(model, tokenizer, prompts, answers, batch_size=batch_size))


def _greedy_config(model, tokenizer, max_new_tokens: int):
    base = getattr(model, "generation_config", None)
    cfg = copy.deepcopy(base) if base is not None else GenerationConfig()
    cfg.max_new_tokens = max_new_tokens
    cfg.do_sample = False
    cfg.num_beams = 1
    cfg.num_return_sequences = 1
    # irrelevant to greedy search; cleared so transformers does not warn about them
    cfg.temperature = None
    cfg.top_p = None
    cfg.top_k = None
    pad = tokenizer.pad_token_id
    if pad is None:
        pad = cfg.pad_token_id if cfg.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        pad = 0
    cfg.pad_token_id = pad
    return cfg


_STOP_TOKENS: dict[tuple[int, tuple[str, ...]], frozenset[int]] = {}


def stop_token_ids(tokenizer, stops: Sequence[str]) -> frozenset[int]:
    """Token ids whose text holds any of `stops` (one scan of the vocabulary per
    tokenizer; transformers' `stop_strings` rebuilds its tables on every call)."""
    key = (id(tokenizer), tuple(stops))
    if key not in _STOP_TOKENS:
        ids = range(len(tokenizer))
        texts = tokenizer.batch_decode([[i] for i in ids])
        _STOP_TOKENS[key] = frozenset(i for i, t in zip(ids, texts) if any(s in t for s in stops))
    return _STOP_TOKENS[key]


class _StopTokens(StoppingCriteria):
    """A row is done once it has generated a token holding a stop string."""

    def __init__(self, ids: frozenset[int]):
        self.ids = torch.tensor(sorted(ids))

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        return torch.isin(input_ids[:, -1], self.ids.to(input_ids.device))


@torch.inference_mode()
def _generate_ids(
    model, tokenizer, prompts: Sequence[str], max_new_tokens: Sequence[int], batch_size: int, stop_at_eos: bool = True,
    stop_strings: Sequence[str] = (),
) -> list[list[int]]:
    """Greedy continuations as token ids, cut at the first EOS (exclusive) and
    at each prompt's own ``max_new_tokens``. Greedy decoding is deterministic,
    so generating a batch up to its largest budget and truncating each row is
    the same as generating each row with its own budget."""
    device = _device(model)
    eos = end_of_text_ids(model, tokenizer)
    out: list[list[int]] = []
    for sl in _chunks(len(prompts), batch_size):
        budgets = list(max_new_tokens[sl])
        ids, mask = encode_prompts(tokenizer, list(prompts[sl]))
        cfg = _greedy_config(model, tokenizer, max(budgets))
        if not stop_at_eos:  # a fixed-length continuation: EOS is suppressed
            cfg.min_new_tokens = max(budgets)
        extra = {"stopping_criteria": StoppingCriteriaList([_StopTokens(stop_token_ids(tokenizer, stop_strings))])} if stop_strings else {}
        gen = model.generate(
            input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=cfg, **extra
        )
        for row, budget in zip(gen[:, ids.shape[1] :].tolist(), budgets):
            row = row[:budget]
            for j, tok in enumerate(row if stop_at_eos else ()):
                if tok in eos:
                    row = row[:j]
                    break
            out.append(row)
    return out


def generate_greedy(
    model, tokenizer, prompts: Sequence[str], max_new_tokens: int = 32, batch_size: int = 16
) -> list[str]:
    """Greedy continuation of each prompt (left-padded batches, KV cache on),
    decoded without special tokens; the prompt is not included."""
    rows = _generate_ids(model, tokenizer, prompts, [max_new_tokens] * len(prompts), batch_size)
    return [tokenizer.decode(r, skip_special_tokens=True) for r in rows]


def generation_exact_match(
    model,
    tokenizer,
    prompts: Sequence[str],
    answers: Sequence[str],
    max_new_tokens: int | None = None,
    batch_size: int = 16,
) -> list[float]:
    """``exact_match`` of each greedy continuation against its answer. By
    default each prompt may generate the answer's token count (as appended to
    the prompt, see ``tokens.join_answer``) + 2 tokens."""
    _check_pairs(prompts, answers)
    if max_new_tokens is None:
        budgets = [
            len(tokenizer(join_answer(p, a), add_special_tokens=False)["input_ids"]) + 2
            for p, a in zip(prompts, answers)
        ]
    else:
        budgets = [max_new_tokens] * len(prompts)
    rows = _generate_ids(model, tokenizer, prompts, budgets, batch_size)
    texts = [tokenizer.decode(r, skip_special_tokens=True) for r in rows]
    return [exact_match(t, a) for t, a in zip(texts, answers)]


def fluency(
    model, tokenizer, prompts: Sequence[str], max_new_tokens: int = 100, batch_size: int = 16
) -> list[float]:
    """``ngram_entropy`` (bits, not in [0, 1]) of each prompt's greedy
    continuation of exactly ``max_new_tokens`` tokens (EOS suppressed, as
    ROME's fixed-length generations): an instruct model that would stop at
    once after a question must still show whether the edit broke its text."""
    rows = _generate_ids(model, tokenizer, prompts, [max_new_tokens] * len(prompts), batch_size, stop_at_eos=False)
    return [ngram_entropy(tokenizer.decode(r, skip_special_tokens=True)) for r in rows]


# --------------------------------------------------------------------------
# Generation-based scores (the protocol of "The Mirage of Model Editing")
# --------------------------------------------------------------------------

ANSWER_STOPS = (".", "\n")

# Other questions about an edit's subject (written for this). Their answers should
# stay the unedited model's: a routed edit runs on any question that names its
# subject. Apart from the ones a refit keeps (`editor_core.refit.SUBJECT_QUESTIONS`),
# so that what is measured is not what was fitted.
SUBJECT_PROBES = (
    "Tell me about {}.",
    "What do you know about {}?",
    "Describe {} in one sentence.",
    "Write a short poem about {}.",
)


def subject_probes(subject: str) -> list[str]:
    """`SUBJECT_PROBES` about `subject` (none for an empty subject)."""
    return [t.format(subject) for t in SUBJECT_PROBES] if subject.strip() else []


def cut_answer(text: str) -> str:
    """A generated answer up to its first "." or newline (EOS already ends the
    generation): what a reader takes as the model's answer."""
    cut = len(text)
    for stop in ANSWER_STOPS:
        i = text.find(stop)
        if i != -1:
            cut = min(cut, i)
    return text[:cut]


def answer_exact(generated: str, answer: str) -> float:
    """Strict SQuAD exact match of the cut answer: nothing may follow the answer."""
    return float(normalize_answer(cut_answer(generated)) == normalize_answer(answer))


def answer_contains(generated: str, answer: str) -> float:
    """The looser figure: the normalized answer occurs, at word boundaries, in
    the normalized generation (not cut: a chat answer may be a sentence)."""
    a = normalize_answer(answer)
    return float(bool(a) and f" {a} " in f" {normalize_answer(generated)} ")


def generate_answers(model, tokenizer, prompts: Sequence[str], max_new_tokens: int = 32, batch_size: int = 16) -> list[str]:
    """Greedy answers, at most `max_new_tokens` tokens, each stopped at EOS;
    rows also stop early once the text holds "." or a newline (the rest would be cut)."""
    rows = _generate_ids(model, tokenizer, prompts, [max_new_tokens] * len(prompts), batch_size, stop_strings=ANSWER_STOPS)
    return [tokenizer.decode(r, skip_special_tokens=True) for r in rows]

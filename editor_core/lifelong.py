"""Lifelong editing, judged by what the model generates.

N edits are applied one after another, as the service applies them, and then
every one of the N is measured on the final state (the protocol of WISE,
AlphaEdit and LocFT; measuring each edit right after its own edit hides
forgetting). Scores, in %:

* reliability: greedy answer to the edit prompt, cut at ".", newline or EOS,
  equals the new target after SQuAD normalization ("Mirage" protocol);
* generalization: the same for each held-back rephrasing (never shown to the
  editor or the router);
* locality: the greedy continuation of each record's unrelated prompt is
  identical, token for token, before and after;
* each of these with the question asked plainly and inside the chat template;
* retention: reliability of the first 10 % of edits, measured after all N;
* teacher-forced reliability, generalization and locality (EasyEdit's
  definitions), labelled as such;
* health: fluency (n-gram entropy of fixed-length continuations) against the
  unedited model's, a capability set (unrelated questions whose unedited greedy
  answers must not change, and the perplexity of a fixed text), and
  ‖ΔW‖/‖W‖ of every edited matrix.

How edits are held is a `Holding`: `Summed` adds every delta into the shared
weights (what the service did until now); `Routed` keeps each delta apart and
runs each question on the base plus at most one edit (`editor_core.routing`).
`RefitAll` holds no per-edit deltas: it refits one delta over every active edit
whenever the model is asked (LocFT-BF, ICLR 2026, `editors.locft`), the
baseline whose cost grows with the number of edits.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable, Sequence

import torch

from . import metrics
from .chat import chat_prompt
from .data.common import normalize
from .data.files import load_dataset
from .data.splits import load_extra, load_task_split
from .delta import Delta, base_weights, load_weights, materialize
from .records import EditRecord, Probe
from .refit import RefitConfig, refit
from .routing import NARROW, MemoryEntry, RoutedMemory, RouterConfig, scope_of, subject_of

# A fixed English text for the capability set's perplexity (written for this purpose).
CAPABILITY_TEXT = (
    "The river rises in the hills to the north and flows south through farmland before it reaches the sea. "
    "In the spring the water is high and fast, and the town on its banks has built walls to keep it out. "
    "Most people in the town work on the farms or in the small factories near the station. "
    "Children walk to school along the river path, and in the summer they swim where the water is slow. "
    "The library opens at nine in the morning and closes at six, except on Sundays, when it is closed all day."
)


# --------------------------------------------------------------------------- records


def lifelong_records(split: str, n: int, *, strict: bool = True) -> list[EditRecord]:
    """ZsRE and CounterFact, alternating, one edit per subject (the ZsRE files repeat
    subjects with other answers; the first record of each subject is kept, so no
    edit contradicts an earlier one). When the smaller set runs out (after about 900
    records of "test") the rest come from the larger one. "val": ZsRE val + train[:400] and CounterFact
    val (where settings are chosen); "test": the ZsRE hold-out file and CounterFact
    test (what is reported). Neither is in the router's word table. "relval": KnowEdit's
    wiki_counterfact train_cf (not in the editor's training by default, `editor_core.data.splits`),
    the records with a question about the same subject and another relation (`other_relations`),
    where settings that touch such questions are chosen; they have no rephrasings, and their
    unrelated prompts are the relation questions of the records after the first n (subjects
    never edited)."""
    if split == "relval":
        return _relation_records(n, strict=strict)
    if split == "val":
        zsre = load_task_split("zsre", "val") + load_task_split("zsre", "train")[:400]
        cf = load_task_split("counterfact", "val")
    else:
        zsre, cf = load_task_split("zsre", "test"), load_task_split("counterfact", "test")
    out, seen = [], set()
    for pair in itertools.zip_longest(zsre, cf):  # when one set runs out, the other goes on alone
        for r in filter(None, pair):
            subject = (r.subject or r.prompt).strip().lower()
            if subject not in seen and r.rephrase_prompts and r.locality:
                seen.add(subject)
                out.append(r)
    if len(out) < n and strict:
        raise ValueError(f"only {len(out)} usable records in split {split!r}; asked for {n}")
    return out[:n]


def _relation_of(record: EditRecord) -> Probe | None:
    """A KnowEdit record's first Relation_Specificity probe, if it has one."""
    kinds = record.extra.get("locality_kinds", ())
    return next((p for p, kind in zip(record.locality, kinds) if kind == "Relation_Specificity"), None)


@lru_cache(maxsize=1)
def _relation_pool() -> tuple[EditRecord, ...]:
    """Every usable "relval" record, one per subject, in file order (read once per process)."""
    recs, seen = [], set()
    for r in load_extra("counterfact"):
        subject = (r.subject or r.prompt).strip().lower()
        if subject not in seen and (q := _relation_of(r)):
            seen.add(subject)
            recs.append(dataclasses.replace(r, extra={**r.extra, "relation_question": q.prompt}))
    return tuple(recs)


def _relation_records(n: int, *, strict: bool) -> list[EditRecord]:
    recs = list(_relation_pool())
    if len(recs) <= n:  # the unrelated prompts need records beyond the edited ones
        if strict or len(recs) < 2:
            raise ValueError(f"only {len(recs)} usable records in split 'relval'; asked for {n} and at least one more")
        n = len(recs) // 2
    # unrelated prompts: the relation questions of the records after the first n (subjects never edited)
    edited, spare = recs[:n], recs[n:]
    return [
        dataclasses.replace(r, locality=(_relation_of(spare[i % len(spare)]),), extra={**r.extra, "locality_kinds": ("unrelated",)})
        for i, r in enumerate(edited)
    ]


def other_relations(records: Sequence[EditRecord]) -> dict[str, str]:
    """Record prompt -> a question about the same subject and another relation
    ("The taxon rank of Ramalinaceae is" for "Which family does Ramalinaceae belong
    to?"): KnowEdit's Relation_Specificity probes. Records of the "relval" split carry
    their own; ZsRE records get one from KnowEdit's ZsRE-test-all, which shares its facts
    with the ZsRE hold-out file (`editor_core.data.splits`), matched by normalized prompt."""
    own = {r.prompt: r.extra["relation_question"] for r in records if "relation_question" in r.extra}
    if own:
        return own
    known: dict[str, str] = {}
    for r in load_dataset("knowedit_zsre_test_all"):
        kinds = r.extra.get("locality_kinds", ())
        same_subject = [p.prompt for p, kind in zip(r.locality, kinds) if kind == "Relation_Specificity"]
        if same_subject:
            known.setdefault(normalize(r.prompt), same_subject[0])
    return {r.prompt: known[normalize(r.prompt)] for r in records if r.task == "zsre" and normalize(r.prompt) in known}


def capability_questions(n: int = 60) -> list[str]:
    """Unrelated questions whose unedited answers must survive: NQ questions and
    CounterFact completions from training records (never edited here)."""
    zsre = load_task_split("zsre", "train")[400:]
    cf = load_task_split("counterfact", "train")
    nq = [p.prompt.removeprefix("nq question: ") for r in zsre for p in r.locality][: n // 2]
    return nq + [p.prompt for r in cf for p in r.locality][: n - len(nq)]


# --------------------------------------------------------------------------- holding edits


class Holding:
    """How a set of active edits turns into the model a batch of questions runs on."""

    name: str

    def __init__(self, base: dict[str, torch.Tensor]):
        self.base = base

    def add(self, edit_id: str, record: EditRecord, delta: Delta | None) -> None: ...

    def rows(self, model, questions: Sequence[str]):
        """A context in which `model` answers row i of a batch as `questions[i]` would be answered."""
        ...

    def weights_now(self) -> dict[str, torch.Tensor]:
        """The weights the next edit is computed on."""
        ...

    def norm_ratios(self) -> dict[str, float]:
        """‖ΔW‖/‖W‖ per edited matrix, for the largest change any question can meet."""
        ...


class Summed(Holding):
    """Every delta added into the shared weights, in order (base + Σ deltas)."""

    name = "summed"

    def __init__(self, base):
        super().__init__(base)
        self.deltas: list[Delta] = []
        self._weights = dict(base)

    def add(self, edit_id, record, delta):
        if delta is not None:
            self.deltas.append(delta)
            # base + d1 + ... + dn, one addition per edit (the same fp32 sums as rebuilding from the base)
            self._weights = materialize(self._weights, [delta])

    @contextmanager
    def rows(self, model, questions):
        load_weights(model, self._weights)
        yield

    def weights_now(self):
        return self._weights

    def norm_ratios(self):
        return {n: float((self._weights[n].float() - w.float()).norm() / w.float().norm()) for n, w in self.base.items()}


class Routed(Holding):
    """A routed memory: each question runs on the base plus its edit's delta alone.

    For throughput the evaluation adds each row's delta as a low-rank term
    (y += x Rᵀ Lᵀ) instead of building one weight set per edit; the service
    builds the weights (`service.state`). Both are the base plus one delta."""

    name = "routed"

    def __init__(self, base, router: RouterConfig | None = None):
        super().__init__(base)
        self.memory = RoutedMemory(config=router or RouterConfig())

    def add(self, edit_id, record, delta):
        if delta is not None:
            self.memory.append(MemoryEntry(edit_id, delta, scope_of(record.prompt, subject=record.subject)))

    @contextmanager
    def rows(self, model, questions):
        load_weights(model, self.base)
        entries = [self.memory.route(q).entry for q in questions]
        for q, e in zip(questions, entries):
            if e is not None and e.delta.meta.get(PENDING):
                raise RuntimeError(f"{q!r} reaches edit {e.edit_id}, held without its delta (`measure_sample` computes every reached one)")
        with row_deltas(model, [e.delta if e is not None else None for e in entries]):
            yield

    def weights_now(self):
        return self.base  # every edit is computed on the base: the memory never mixes deltas

    def norm_ratios(self):
        out = {n: 0.0 for n in self.base}
        for e in self.memory.entries:
            for n, w in self.base.items():
                if n in e.delta.factors:
                    out[n] = max(out[n], float(e.delta.dense(n).norm() / w.float().norm()))
        return out


class RefitAll(Holding):
    """One delta fitted over all active edits at once, from the base weights, when
    the model is next asked after an edit (breadth-first: `editors.locft`)."""

    name = "all"

    def __init__(self, base, fit: Callable[[list[EditRecord]], Delta]):
        super().__init__(base)
        self.fit = fit
        self.records: list[EditRecord] = []
        self.delta: Delta | None = None
        self.weights: dict[str, torch.Tensor] | None = None  # base + delta, built once per refit
        self.seconds = 0.0  # the last refit's

    def add(self, edit_id, record, delta):
        self.records.append(record)
        self.delta = self.weights = None

    def _current(self, model) -> Delta:
        if self.delta is None:
            load_weights(model, self.base)
            t = time.perf_counter()
            self.delta = self.fit(list(self.records))
            self.seconds = time.perf_counter() - t
            self.weights = materialize(self.base, [self.delta])
        return self.delta

    @contextmanager
    def rows(self, model, questions):
        if self.records:
            self._current(model)
        load_weights(model, self.weights if self.records else self.base)
        yield

    def weights_now(self):
        return self.base

    def norm_ratios(self):
        if self.delta is None:
            return {n: 0.0 for n in self.base}
        d = self.delta
        return {n: float(d.dense(n).norm() / w.float().norm()) if n in d.factors else 0.0 for n, w in self.base.items()}


@contextmanager
def row_deltas(model, deltas: Sequence[Delta | None]):
    """Forward hooks that add, to row i of every batch, the output change of
    `deltas[i]` (None: nothing). Only nn.Linear weights (W is out x in)."""
    names = sorted({n for d in deltas if d is not None for n in d.factors})
    handles = []
    for name in names:
        rows = [i for i, d in enumerate(deltas) if d is not None and name in d.factors]
        rank = max(deltas[i].factors[name][0].shape[1] for i in rows)
        module = model.get_submodule(name.rsplit(".", 1)[0])
        w = module.weight
        left = torch.zeros(len(deltas), w.shape[0], rank, dtype=w.dtype, device=w.device)
        right = torch.zeros(len(deltas), rank, w.shape[1], dtype=w.dtype, device=w.device)
        for i in rows:
            lf, rf = deltas[i].factors[name]
            left[i, :, : lf.shape[1]] = lf.to(w)
            right[i, : rf.shape[0]] = rf.to(w)

        def hook(mod, inputs, output, left=left, right=right):
            x = inputs[0]  # (B, T, in)
            return output + torch.einsum("bor,btr->bto", left, torch.einsum("bri,bti->btr", right, x))

        handles.append(module.register_forward_hook(hook))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


# --------------------------------------------------------------------------- methods


@dataclass
class Method:
    """An editor (or none), how its edits are held, and whether each edit is refit."""

    name: str
    editor: object | None  # an editor_core Editor; None: the refit alone makes the edit
    holding: str  # "summed" | "routed" | "all" (the editor refits every active edit at once)
    refit: RefitConfig | None = None
    router: RouterConfig = field(default_factory=RouterConfig)

    def make_holding(self, base, model=None, tok=None) -> Holding:
        if self.holding == "all":
            return RefitAll(base, lambda records: self.editor.compute_delta(model, tok, records))
        return Routed(base, self.router) if self.holding == "routed" else Summed(base)


def apply_edit(method: Method, model, tok, spec, holding: Holding, edit_id: str, record: EditRecord, cache: Path | None = None) -> dict:
    """Compute one edit on the weights it would be computed on in the service, and hold it.

    A routed edit is computed on the base alone, so it is the same edit whatever
    came before it: with `cache` (a folder) it is saved there and read back by a
    later run (a cut-off bench resumes; N=1 and N=1000 share their edits)."""
    key = hashlib.sha256(json.dumps([record.prompt, record.target_new]).encode()).hexdigest()[:24]
    path = cache / f"{key}.safetensors" if cache is not None and isinstance(holding, Routed) else None
    if path is not None and path.exists():
        delta = Delta.load(path)
        info = json.loads(delta.meta.get("lifelong_info", "{}"))
        holding.add(edit_id, record, delta if delta.factors else None)
        return info
    info = _compute_edit(method, model, tok, spec, holding, record)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        d = info.pop("delta")
        Delta(d.factors if d is not None else {}, {**(d.meta if d is not None else {}), "lifelong_info": info}).save(path)
        holding.add(edit_id, record, d)
        return info
    holding.add(edit_id, record, info.pop("delta"))
    return info


def _compute_edit(method: Method, model, tok, spec, holding: Holding, record: EditRecord) -> dict:
    load_weights(model, holding.weights_now())
    t0 = time.perf_counter()
    per_edit = method.editor is not None and not isinstance(holding, RefitAll)
    delta = method.editor.compute_delta(model, tok, [record]) if per_edit else None
    t1 = time.perf_counter()
    info = {"seconds_instant": t1 - t0, "refit_steps": 0, "refit_took": None, "seconds_refit": 0.0}
    if method.refit is not None:
        res = refit(model, tok, spec, record.prompt, record.target_new, delta, method.refit, subject=record.subject)
        delta = res.delta
        info.update(refit_steps=res.steps, refit_took=res.took, refit_kept=res.kept, seconds_refit=time.perf_counter() - t1)
    info["delta"] = delta
    return info


# --------------------------------------------------------------------------- measuring


def _batched(holding: Holding, model, questions, fn, batch_size: int = 16) -> list:
    """fn(indices) -> one result per index, run batch by batch with each row on its own edit."""
    out: list = []
    for start in range(0, len(questions), batch_size):
        idx = list(range(start, min(start + batch_size, len(questions))))
        with holding.rows(model, [questions[i] for i in idx]):
            out += fn(idx)
    return out


def answer(model, tok, holding: Holding, questions: Sequence[str], prompts: Sequence[str], max_new_tokens: int = 32) -> list[str]:
    """Greedy answers to `prompts`, each row run on what its `question` routes to."""
    return _batched(
        holding,
        model,
        questions,
        lambda idx: metrics.generate_answers(model, tok, [prompts[i] for i in idx], max_new_tokens=max_new_tokens, batch_size=len(idx)),
    )


def teacher_forced(model, tok, holding: Holding, questions, prompts, answers) -> list[float]:
    return _batched(
        holding,
        model,
        questions,
        lambda idx: metrics.teacher_forced_accuracy(model, tok, [prompts[i] for i in idx], [answers[i] for i in idx], batch_size=len(idx)),
    )


def argmax_answers(model, tok, holding: Holding, questions, prompts, answers) -> list[torch.Tensor]:
    return _batched(
        holding,
        model,
        questions,
        lambda idx: metrics.answer_argmax(model, tok, [prompts[i] for i in idx], [answers[i] for i in idx], batch_size=len(idx)),
    )


@torch.inference_mode()
def perplexity(model, tok, text: str) -> float:
    ids = tok(text, return_tensors="pt").input_ids.to(next(model.parameters()).device)
    return math.exp(float(model(input_ids=ids, labels=ids, use_cache=False).loss))


@dataclass
class Probes:
    """Everything measured, built once from the records: prompts in both formats."""

    records: list[EditRecord]
    capability: list[str]  # unrelated questions (never edited)
    n_fluency: int = 50  # fluency is measured on the prompts of the first edits
    relation: dict[str, str] = field(default_factory=dict)  # record prompt -> another relation of its subject

    def sets(self, tok, n: int, only: Sequence[int] | None = None) -> dict[str, tuple[list[str], list[str], list[str]]]:
        """name -> (routing questions, prompts, answers) for the first n records (`only`: for those
        of them, by index)."""
        size = min(n, len(self.records))
        index = list(range(size)) if only is None else sorted({i for i in only if 0 <= i < size})
        recs = [self.records[i] for i in index]
        out: dict[str, tuple[list[str], list[str], list[str]]] = {}
        for fmt in ("plain", "chat"):

            def ask(q: str, fmt: str = fmt) -> str:
                return q if fmt == "plain" else chat_prompt(tok, q)

            rel = [(r.prompt, ask(r.prompt), r.target_new) for r in recs]
            gen = [(p, ask(p), r.target_new) for r in recs for p in r.rephrase_prompts[:1]]
            loc = [(p.prompt, ask(p.prompt), p.answer) for r in recs for p in r.locality[:1]]
            cap = [(q, ask(q), "") for q in self.capability]
            names = [(i, r, subject_of(r.prompt, r.subject)) for i, r in zip(index, recs)]
            # another question about each edit's subject (one of metrics.SUBJECT_PROBES per edit, in turn)
            about = [(metrics.subject_probes(s)[i % len(metrics.SUBJECT_PROBES)], r.target_new) for i, r, s in names if s]
            subj = [(q, ask(q), t) for q, t in about]
            other = [(q, ask(q), r.target_new) for r in recs if (q := self.relation.get(r.prompt))]
            for name, rows in (("rel", rel), ("gen", gen), ("loc", loc), ("cap", cap), ("subj", subj), ("other", other)):
                out[f"{name}/{fmt}"] = ([q for q, _, _ in rows], [p for _, p, _ in rows], [a for _, _, a in rows])
        return out


def _unedited(model, tok, holding: Holding, reference: dict, name: str, prompts: Sequence[str], max_new_tokens: int) -> None:
    """The unedited model's greedy answers to `prompts` into `reference[name]`, for those not there yet."""
    have = reference.setdefault(name, {})
    todo = [x for x in prompts if x not in have]
    if todo:
        load_weights(model, holding.base)
        for x, a in zip(todo, metrics.generate_answers(model, tok, todo, max_new_tokens=max_new_tokens)):
            have[x] = a


def _against_unedited(probe_set, answers: list[str], unedited: dict[str, str]) -> tuple[list[float], list[float], list[float]]:
    """Per question of a (questions, prompts, targets) set: is the answer the unedited one, is it
    hijacked (it is the edit's target, where the unedited answer was not), and does it name the
    target anywhere in it where the unedited answer did not ("The tower in Rome is 800 metres tall.")?
    An answer is its first sentence (generation stops at "." or a line break); its words are
    SQuAD-normalized (`metrics.answer_contains`): "Rome's" is "romes", not "Rome"."""
    _, prompts, targets = probe_set
    before = [unedited[p] for p in prompts]
    kept = [float(g == u) for g, u in zip(answers, before)]
    hijacked = [metrics.answer_exact(g, t) * (1.0 - metrics.answer_exact(u, t)) for g, u, t in zip(answers, before, targets)]
    named = [metrics.answer_contains(g, t) * (1.0 - metrics.answer_contains(u, t)) for g, u, t in zip(answers, before, targets)]
    return kept, hijacked, named


def measure(
    model,
    tok,
    holding: Holding,
    probes: Probes,
    n: int,
    reference: dict,
    *,
    max_new_tokens: int = 32,
    teacher_forcing: bool = True,
    only: Sequence[int] | None = None,
    health: bool = True,
) -> dict:
    """All scores of the first n edits on the state `holding` now holds (`only`: the edit-level
    scores of those of them, by index; retention over those in the first tenth). `reference`
    caches the unedited model's answers (filled on first use, with the base weights). `health`
    False leaves out what does not depend on `only`, which a second call on the same state would
    measure again: "capability" is then None and there is no fluency_ratio, perplexity_ratio or norm_ratio*."""
    sets = probes.sets(tok, n, only)
    if not health:
        sets = {name: qs for name, qs in sets.items() if not name.startswith("cap/")}
    first = max(1, n // 10)
    early = sum(1 for i in (range(n) if only is None else set(only)) if i < min(first, n))  # the first rows of rel/*
    answers = {name: answer(model, tok, holding, q, p, max_new_tokens) for name, (q, p, _) in sets.items()}
    for name in ("loc/plain", "loc/chat", "cap/plain", "cap/chat", "subj/plain", "subj/chat", "other/plain", "other/chat"):
        if name in sets:
            _unedited(model, tok, holding, reference, name, sets[name][1], max_new_tokens)
    res: dict = {"n_edits": n}
    for fmt in ("plain", "chat"):
        rq, rp, ra = sets[f"rel/{fmt}"]
        rel = [metrics.answer_exact(g, a) for g, a in zip(answers[f"rel/{fmt}"], ra)]
        gq, gp, ga = sets[f"gen/{fmt}"]
        gen = [metrics.answer_exact(g, a) for g, a in zip(answers[f"gen/{fmt}"], ga)]
        lq, lp, _ = sets[f"loc/{fmt}"]
        loc = [float(g == reference[f"loc/{fmt}"][p]) for g, p in zip(answers[f"loc/{fmt}"], lp)]
        cap = [float(g == reference[f"cap/{fmt}"][p]) for g, p in zip(answers[f"cap/{fmt}"], sets[f"cap/{fmt}"][1])] if health else []
        subj, hijack, named = _against_unedited(sets[f"subj/{fmt}"], answers[f"subj/{fmt}"], reference[f"subj/{fmt}"])
        other, other_hijack, other_named = _against_unedited(sets[f"other/{fmt}"], answers[f"other/{fmt}"], reference[f"other/{fmt}"])
        res[fmt] = {
            "reliability": metrics.summarize(rel),
            "generalization": metrics.summarize(gen),
            "locality": metrics.summarize(loc),
            "retention_first10pct": metrics.summarize(rel[:early]),
            "capability": metrics.summarize(cap),
            # another question about the edited subject: answered as unedited, or with the edit's target
            "subject_locality": metrics.summarize(subj),
            "subject_hijack": metrics.summarize(hijack),
            # the target named in the answer's first sentence where the unedited answer did not name it (since session 24;
            # the service's subject_mentions is the share naming it, before and after, without that condition)
            "subject_mentions": metrics.summarize(named),
            # the same subject, another relation (KnowEdit's Relation_Specificity; ZsRE records only)
            "relation_locality": metrics.summarize(other),
            "relation_hijack": metrics.summarize(other_hijack),
            "relation_mentions": metrics.summarize(other_named),
            "reliability_contains": metrics.summarize([metrics.answer_contains(g, a) for g, a in zip(answers[f"rel/{fmt}"], ra)]),
            "generalization_contains": metrics.summarize([metrics.answer_contains(g, a) for g, a in zip(answers[f"gen/{fmt}"], ga)]),
        }
    # every edit's own question and held-back rephrasing with both answers, for reading failures (bench/lifelong.py --answers)
    size = min(n, len(probes.records))
    measured = [probes.records[i] for i in (range(size) if only is None else sorted({i for i in only if 0 <= i < size}))]
    res["answers"] = [
        {"task": r.task, "kind": kind, "question": q, "target": r.target_new, "plain": plain, "chat": chat}
        for kind, recs in (("rel", measured), ("gen", [r for r in measured if r.rephrase_prompts]))
        for r, q, plain, chat in zip(recs, sets[f"{kind}/plain"][0], answers[f"{kind}/plain"], answers[f"{kind}/chat"])
    ]
    res["examples"] = [
        {"prompt": q, "target": a, "plain": g, "chat": c}
        for q, a, g, c in list(zip(sets["rel/plain"][0], sets["rel/plain"][2], answers["rel/plain"], answers["rel/chat"]))[:5]
    ]
    for key, name in (("subject_examples", "subj/chat"), ("relation_examples", "other/chat")):
        res[key] = [
            {"question": q, "target": t, "unedited": reference[name][p], "chat": g}
            for q, p, t, g in list(zip(*sets[name], answers[name]))[:8]
        ]
    if teacher_forcing:
        rq, rp, ra = sets["rel/plain"]
        gq, gp, ga = sets["gen/plain"]
        lq, lp, la = sets["loc/plain"]
        pre = reference.setdefault("loc/argmax", {})
        todo = [i for i, p in enumerate(lp) if p not in pre]
        if todo:
            load_weights(model, holding.base)
            for i, a in zip(todo, metrics.answer_argmax(model, tok, [lp[i] for i in todo], [la[i] for i in todo])):
                pre[lp[i]] = a
        post = argmax_answers(model, tok, holding, lq, lp, la)
        res["teacher_forced"] = {
            "reliability": metrics.summarize(teacher_forced(model, tok, holding, rq, rp, ra)),
            "generalization": metrics.summarize(teacher_forced(model, tok, holding, gq, gp, ga)),
            "locality": metrics.summarize(metrics.agreement([pre[p] for p in lp], post)),
        }
    if health:
        res |= _health(model, tok, holding, probes, n, reference)
    load_weights(model, holding.base)
    return res


def _health(model, tok, holding: Holding, probes: Probes, n: int, reference: dict) -> dict:
    """`measure`'s figures of the edited state's health, independent of which edits are scored."""
    res: dict = {}
    # health: fluency where the edits apply (continuations of the first edits' prompts),
    # and the perplexity of a fixed unrelated text
    flu_q = [r.prompt for r in probes.records[: min(n, probes.n_fluency)]]
    flu = _batched(
        holding, model, flu_q, lambda idx: metrics.fluency(model, tok, [flu_q[i] for i in idx], max_new_tokens=40, batch_size=len(idx))
    )
    base_flu = reference.setdefault("fluency", {})
    todo = [q for q in flu_q if q not in base_flu]
    if todo:
        load_weights(model, holding.base)
        base_flu.update(zip(todo, metrics.fluency(model, tok, todo, max_new_tokens=40)))
    if "perplexity" not in reference:
        load_weights(model, holding.base)
        reference["perplexity"] = perplexity(model, tok, CAPABILITY_TEXT)
    unedited = sum(base_flu[q] for q in flu_q)
    res["fluency_ratio"] = sum(flu) / unedited if unedited else None
    with holding.rows(model, [CAPABILITY_TEXT]):
        res["perplexity_ratio"] = perplexity(model, tok, CAPABILITY_TEXT) / reference["perplexity"]
    ratios = holding.norm_ratios()
    res["norm_ratio_max"] = max(ratios.values()) if ratios else 0.0
    res["norm_ratio"] = ratios
    return res


def run(
    model,
    tok,
    spec,
    method: Method,
    probes: Probes,
    checkpoints: Sequence[int],
    *,
    on_result: Callable[[dict], None] | None = None,
    progress: Callable[[int], None] | None = None,
    reference: dict | None = None,
    cache: Path | None = None,
) -> list[dict]:
    """Apply the records in order with `method`; measure every edit so far at each checkpoint."""
    base = base_weights(model, spec.edit_params)
    holding = method.make_holding(base, model, tok)
    reference = {} if reference is None else reference
    results, infos = [], []
    try:
        for i, record in enumerate(probes.records[: max(checkpoints)]):
            infos.append(apply_edit(method, model, tok, spec, holding, f"e{i}", record, cache))
            if progress:
                progress(i + 1)
            if i + 1 in checkpoints:
                res = measure(model, tok, holding, probes, i + 1, reference)
                res["method"] = method.name
                fitted_all = holding.seconds if isinstance(holding, RefitAll) else 0.0  # measure() fitted this N's
                res.update(_edit_costs(infos, fitted_all))
                results.append(res)
                if on_result:
                    on_result(res)
    finally:
        load_weights(model, base)
    return results


def _edit_costs(infos: Sequence[dict], fitted_all: float = 0.0) -> dict:
    """Mean seconds per edit (the editor's and the refit's, plus `fitted_all` spread over them), refit steps and success."""
    took = [x["refit_took"] for x in infos if x["refit_took"] is not None]
    return {
        "seconds_per_edit": (sum(x["seconds_instant"] + x["seconds_refit"] for x in infos) + fitted_all) / len(infos),
        "seconds_instant": sum(x["seconds_instant"] for x in infos) / len(infos),
        "refit_took": 100.0 * sum(took) / len(took) if took else None,
        "refit_steps": sum(x["refit_steps"] for x in infos) / len(infos),
    }


# --------------------------------------------------------------------------- a sample of the edits at large N
#
# In a routed memory every edit is computed on the base alone, and a question runs on
# the base plus the one edit it reaches. So the state of N held edits answers a set of
# questions exactly as long as every edit those questions reach holds its delta: the
# other edits need only their keys. `measure_sample` measures N = 1000 that way, on
# the first tenth of the edits and a random sample of the rest, at the cost of the
# edits it reads instead of all N (each of the default's refits takes seconds).

# `Delta.meta` key of an edit held without its delta: its keys route questions as the
# edit's would, and a question that reaches it is an error (`Routed.rows`), never a
# silently unedited answer.
PENDING = "lifelong_pending"


def strata(n: int, k: int, seed: int = 0) -> tuple[list[int], list[int]]:
    """The edits measured at N = n on a sample: the first tenth, every one of them
    (retention is theirs), and k of the other nine tenths at random (the first k of
    one fixed order, so that a larger k measures the same edits and more)."""
    first = max(1, n // 10)
    rest = list(range(first, n))
    random.Random(f"{seed}:{n}").shuffle(rest)
    return list(range(first)), sorted(rest[:k])


def _pending(method: Method) -> Delta:
    """A stand-in for an edit's delta that routes as the real one (narrow or not, `routing.NARROW`)."""
    narrow = method.refit is not None and method.refit.narrow_scope
    return Delta({}, {PENDING: "1", **({"scope": NARROW} if narrow else {})})


def needed(method: Method, tok, probes: Probes, n: int, measured: Sequence[int]) -> list[int]:
    """The edits (by index) whose deltas a measurement of the edits `measured` at N = n reads: those
    edits, and every edit that any question it asks reaches (their own probes, every edit's unrelated
    prompt, the capability set, the fluency prompts, the fixed text)."""
    questions = {q for qs, _, _ in probes.sets(tok, n, measured).values() for q in qs}
    questions |= {r.prompt for r in probes.records[: min(n, probes.n_fluency)]} | {CAPABILITY_TEXT}
    questions |= set(probes.sets(tok, n)["loc/plain"][0])  # every edit's unrelated prompt: Locality is measured whole
    return sorted(_reached(method, probes, n, questions) | set(measured))


def _reached(method: Method, probes: Probes, n: int, questions) -> set[int]:
    """The edits (by index) among the first n that `questions` reach, by routing over their keys alone."""
    holding = Routed({}, method.router)
    for i, record in enumerate(probes.records[:n]):
        holding.add(f"e{i}", record, _pending(method))
    return {int(e.edit_id[1:]) for q in questions if (e := holding.memory.route(q).entry) is not None}


def _hold(model, tok, spec, method: Method, probes: Probes, n: int, need: set[int], cache, progress=None) -> tuple[Routed, list[dict]]:
    """The first n edits held in a routed memory: those in `need` with their deltas (computed or read from
    `cache`), every other by its keys alone (`_pending`); and the computed edits' costs. `model` is left
    on the base weights."""
    holding = method.make_holding(base_weights(model, spec.edit_params), model, tok)
    if not isinstance(holding, Routed):
        raise ValueError(f"{method.name}: only a routed memory answers a question from one edit's delta alone")
    infos = []
    try:
        for i, record in enumerate(probes.records[:n]):
            if i in need:
                infos.append(apply_edit(method, model, tok, spec, holding, f"e{i}", record, cache))
            else:
                holding.add(f"e{i}", record, _pending(method))
            if progress:
                progress(i + 1)
    finally:
        load_weights(model, holding.base)
    return holding, infos


def _locality_over_all(model, tok, holding: Routed, probes: Probes, n: int, reference: dict) -> dict:
    """Locality by generation over every one of the first n edits' unrelated prompts, each format, and how
    many of them reach an edit ("reached"). A prompt that reaches none runs on the exact base weights, so it
    answers as unedited by construction and is not generated; the others are answered on the base plus the
    delta of the edit they reach, which `holding` must hold."""
    sets = probes.sets(tok, n)
    # both formats route the same questions (the user's words, bare or in the chat template)
    reach = [i for i, q in enumerate(sets["loc/plain"][0]) if holding.memory.route(q).entry is not None]
    out: dict = {"reached": len(reach), "changed": {}}
    for fmt in ("plain", "chat"):
        questions, prompts, _ = sets[f"loc/{fmt}"]
        asked = [prompts[i] for i in reach]
        _unedited(model, tok, holding, reference, f"loc/{fmt}", asked, 32)
        got = answer(model, tok, holding, [questions[i] for i in reach], asked)
        changed = [(p, g) for p, g in zip(asked, got) if g != reference[f"loc/{fmt}"][p]]
        out[fmt] = metrics.summarize([0.0] * len(changed) + [1.0] * (len(questions) - len(changed)))
        out["changed"][fmt] = changed
    return out


def locality_over_all(
    model, tok, spec, method: Method, probes: Probes, n: int, *, reference: dict | None = None, cache: Path | None = None
) -> dict:
    """Locality by generation with n edits held, over every edit's unrelated prompt (`_locality_over_all`),
    computing only the deltas those prompts reach (a routed method): what `measure_sample` reports, alone."""
    need = _reached(method, probes, n, probes.sets(tok, n)["loc/plain"][0])
    holding, _ = _hold(model, tok, spec, method, probes, n, need, cache)
    try:
        return _locality_over_all(model, tok, holding, probes, n, {} if reference is None else reference)
    finally:
        load_weights(model, holding.base)


def measure_sample(
    model,
    tok,
    spec,
    method: Method,
    probes: Probes,
    n: int,
    k: int,
    *,
    seed: int = 0,
    reference: dict | None = None,
    cache: Path | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict:
    """`run`'s measurement at N = n for a routed method, on the first tenth of the edits and k
    of the rest (`strata`), with only the deltas it reads computed (`needed`); every other edit
    is held by its keys. Each figure is the two strata's means weighted by the questions each
    stratum stands for (Locality by generation: every edit's unrelated prompt, measured whole;
    retention: the first tenth's; the capability set, fluency and the fixed text's
    perplexity are measured whole; ‖ΔW‖/‖W‖ and the seconds per edit are over the computed deltas
    only). `res["sample"]` says what was measured, `res["strata"]` holds each stratum's figures."""
    early, later = strata(n, k, seed)
    need = set(needed(method, tok, probes, n, early + later))
    holding, infos = _hold(model, tok, spec, method, probes, n, need, cache, progress)
    reference = {} if reference is None else reference
    try:
        parts = [measure(model, tok, holding, probes, n, reference, only=s, health=h) for s, h in ((early, True), (later, False))]
        # Locality over every edit's unrelated prompt, not a sample: few of them reach any edit (those
        # that hold an edited subject's words), so a sample of them is mostly noise around a known bound
        locality = _locality_over_all(model, tok, holding, probes, n, reference)
    finally:
        load_weights(model, holding.base)
    # each stratum weighs what it stands for: its whole population's questions of that kind
    # (one per edit for most figures; the subject and relation questions exist for some edits only)
    population = [probes.sets(tok, n, early), probes.sets(tok, n, range(len(early), n))]
    kind = {"reliability": "rel", "reliability_contains": "rel", "generalization": "gen", "generalization_contains": "gen"}
    kind |= {"locality": "loc", "subject_locality": "subj", "subject_hijack": "subj", "relation_locality": "other"}
    kind |= {"subject_mentions": "subj", "relation_hijack": "other", "relation_mentions": "other"}

    def mix(name: str, a: float | None, b: float | None, fmt: str = "plain") -> float | None:
        if a is None or b is None:
            return b if a is None else a
        counts = [len(sets[f"{kind[name]}/{fmt}"][0]) for sets in population]
        return (counts[0] * a + counts[1] * b) / sum(counts)

    unmixed = {"retention_first10pct", "capability"}  # the first stratum's alone: the first tenth, the state's health
    assert all(name in kind or name in unmixed for name in parts[0]["plain"]), "a per-edit figure with no population to weigh it by"
    res = dict(parts[0])  # the edit-independent figures (capability, fluency, perplexity, norms) and the examples
    res["answers"] = parts[0]["answers"] + parts[1]["answers"]
    for fmt in ("plain", "chat"):
        res[fmt] = {name: mix(name, v, parts[1][fmt][name], fmt) if name in kind else v for name, v in parts[0][fmt].items()}
    if "teacher_forced" in res:
        res["teacher_forced"] = {name: mix(name, v, parts[1]["teacher_forced"][name]) for name, v in parts[0]["teacher_forced"].items()}
    for fmt in ("plain", "chat"):
        res[fmt]["locality"] = locality[fmt]
    res["locality_reached"] = locality["reached"]
    res["method"] = method.name
    res["strata"] = [{"plain": part["plain"], "chat": part["chat"], "teacher_forced": part.get("teacher_forced")} for part in parts]
    res["sample"] = {
        **{"first": len(early), "rest": len(later), "of_rest": n - len(early), "seed": seed, "deltas_computed": len(need)},
        "norms_and_seconds": "over the computed deltas",
    }
    res.update(_edit_costs(infos))
    return res

"""How well one edit took, before and after, on the versions the service serves.

Every prompt runs on the tree its question routes to in that version
(`Snapshot.tree_for`), exactly as a request would. Scores, in %:

By generation (greedy, cut at ".", newline or EOS, SQuAD-normalized exact match;
the protocol of "The Mirage of Model Editing"):
* reliability_plain / reliability_chat: the edit prompt, asked plainly and as a
  user turn in the chat template, answers the target;
* generalization_plain / generalization_chat: the same for each rephrase prompt;
* probe_locality_generation: the greedy continuation of each fixed probe
  (`probes.PROBES`) is identical before and after;
* subject_locality_generation: other questions about each record's subject
  (`metrics.SUBJECT_PROBES`, "Tell me about Peru.", in the chat template) answer
  as before; subject_hijack: those answers that are the edit's target;
  subject_mentions: those that name it anywhere in their first sentence (SQuAD-normalized "contains":
  "How tall is the Eiffel Tower?" -> "The tower in Rome is 800 metres tall.";
  "Rome's", normalized, is "romes" and does not count).

Teacher-forced (EasyEdit's definitions, labelled as such):
* reliability, generalization, portability: token accuracy of the answer;
* locality, probe_locality: agreement of the after-edit argmax answer tokens
  with the before-edit ones (so "before" is 100 by definition).

Prompts are the raw request prompts, without instructions: what a caller of
`/generate` or `/v1/chat/completions` sends. A set the request did not fill
has n = 0 and null scores, never a made-up zero.
"""

from __future__ import annotations

from typing import Callable, Sequence

from editor_core import metrics
from editor_core.chat import chat_prompt
from editor_core.records import EditRecord
from editor_core.routing import subject_of

from .probes import PROBES
from .state import Snapshot

ACCURACY_SETS = ("reliability", "generalization", "portability")
AGREEMENT_SETS = ("locality", "probe_locality")
GENERATION_SETS = ("reliability_plain", "reliability_chat", "generalization_plain", "generalization_chat")


def pair_sets(records: list[EditRecord]) -> dict[str, tuple[list[str], list[str]]]:
    """(questions, answers) per teacher-forced metric."""
    sets: dict[str, tuple[list[str], list[str]]] = {name: ([], []) for name in ACCURACY_SETS + AGREEMENT_SETS}

    def add(name: str, prompt: str, answer: str) -> None:
        sets[name][0].append(prompt)
        sets[name][1].append(answer)

    for r in records:
        add("reliability", r.prompt, r.target_new)
        for p in r.rephrase_prompts:
            add("generalization", p, r.target_new)
        for probe in r.portability:
            add("portability", probe.prompt, probe.answer)
        for probe in r.locality:
            add("locality", probe.prompt, probe.answer)
    for probe in PROBES:
        add("probe_locality", probe.prompt, probe.answer)
    return sets


def routed(snap: Snapshot, questions: Sequence[str], fn: Callable[[object, list[int]], list]) -> list:
    """fn(tree, indices) for each group of questions that route to the same tree; results in question order."""
    groups: dict[int, tuple[object, list[int]]] = {}
    for i, q in enumerate(questions):
        tree = snap.tree_for(q)
        groups.setdefault(id(tree), (tree, []))[1].append(i)
    out: list = [None] * len(questions)
    for tree, idx in groups.values():
        for i, value in zip(idx, fn(tree, idx)):
            out[i] = value
    return out


def measure(pre: Snapshot, post: Snapshot, tokenizer, records: list[EditRecord], *, max_new_tokens: int = 32) -> dict[str, dict]:
    """Scores of `records` on the version before the edit and on the version after it."""
    sets = pair_sets(records)

    def accuracy(snap: Snapshot, name: str) -> list[float]:
        qs, ans = sets[name]
        return routed(
            snap, qs, lambda tree, idx: metrics.teacher_forced_accuracy(tree, tokenizer, [qs[i] for i in idx], [ans[i] for i in idx])
        )

    def argmax(snap: Snapshot, name: str) -> list:
        qs, ans = sets[name]
        return routed(snap, qs, lambda tree, idx: metrics.answer_argmax(tree, tokenizer, [qs[i] for i in idx], [ans[i] for i in idx]))

    out: dict[str, dict] = {}
    for name in ACCURACY_SETS:
        n = len(sets[name][0])
        before, after = (accuracy(pre, name), accuracy(post, name)) if n else ([], [])
        out[name] = {"before": metrics.summarize(before), "after": metrics.summarize(after), "n": n}
    for name in AGREEMENT_SETS:
        n = len(sets[name][0])
        agree = metrics.agreement(argmax(pre, name), argmax(post, name)) if n else []
        out[name] = {"before": 100.0 if n else None, "after": metrics.summarize(agree), "n": n}

    # by generation
    asked: dict[str, tuple[list[str], list[str], list[str]]] = {}  # name -> (questions, prompts, targets)
    for fmt in ("plain", "chat"):

        def ask(q: str, fmt=fmt) -> str:
            return q if fmt == "plain" else chat_prompt(tokenizer, q)

        rel = [(r.prompt, r.target_new) for r in records]
        gen = [(p, r.target_new) for r in records for p in r.rephrase_prompts]
        asked[f"reliability_{fmt}"] = ([q for q, _ in rel], [ask(q) for q, _ in rel], [t for _, t in rel])
        asked[f"generalization_{fmt}"] = ([q for q, _ in gen], [ask(q) for q, _ in gen], [t for _, t in gen])

    def answers(snap: Snapshot, questions: list[str], prompts: list[str]) -> list[str]:
        return routed(
            snap,
            questions,
            lambda tree, idx: metrics.generate_answers(tree, tokenizer, [prompts[i] for i in idx], max_new_tokens=max_new_tokens),
        )

    for name in GENERATION_SETS:
        qs, prompts, targets = asked[name]
        scores = {}
        for when, snap in (("before", pre), ("after", post)):
            said = answers(snap, qs, prompts) if qs else []
            scores[when] = metrics.summarize([metrics.answer_exact(s, t) for s, t in zip(said, targets)])
        out[name] = {**scores, "n": len(qs)}
    probes = [p.prompt for p in PROBES]
    same = [float(a == b) for a, b in zip(answers(pre, probes, probes), answers(post, probes, probes))]
    out["probe_locality_generation"] = {"before": 100.0, "after": metrics.summarize(same), "n": len(probes)}

    # other questions about each record's subject, where a routed edit also runs
    about = [(q, r.target_new) for r in records for q in metrics.subject_probes(subject_of(r.prompt, r.subject))]
    qs = [q for q, _ in about]
    prompts = [chat_prompt(tokenizer, q) for q in qs]
    said = {when: answers(snap, qs, prompts) if qs else [] for when, snap in (("before", pre), ("after", post))}
    same = [float(a == b) for a, b in zip(said["before"], said["after"])]
    out["subject_locality_generation"] = {"before": 100.0 if qs else None, "after": metrics.summarize(same), "n": len(qs)}
    out["subject_hijack"] = {
        when: metrics.summarize([metrics.answer_exact(a, t) for a, (_, t) in zip(said[when], about)]) for when in ("before", "after")
    } | {"n": len(qs)}
    out["subject_mentions"] = {
        when: metrics.summarize([metrics.answer_contains(a, t) for a, (_, t) in zip(said[when], about)]) for when in ("before", "after")
    } | {"n": len(qs)}
    return out

"""Reliability, Generalization, Locality and Portability of one edit, before and after.

Scores are `editor_core.metrics` (EasyEdit's definitions), in %:
* reliability: prompt -> target_new, teacher-forced token accuracy;
* generalization: each rephrase prompt -> target_new, the same;
* portability: the request's portability pairs, the same;
* locality: the request's locality pairs, agreement of the post-edit argmax
  answer tokens with the pre-edit ones (so "before" is 100 by definition);
* probe_locality: the same on the service's fixed probes (`probes.PROBES`).

Prompts are the raw request prompts, without instructions: what a caller of
`/generate` will send. A set the request did not fill has n = 0 and null
scores, never a made-up zero.
"""

from __future__ import annotations

from typing import Callable

import torch

from editor_core import metrics
from editor_core.records import EditRecord

from .probes import PROBES

ACCURACY_SETS = ("reliability", "generalization", "portability")
AGREEMENT_SETS = ("locality", "probe_locality")


def pair_sets(records: list[EditRecord]) -> dict[str, tuple[list[str], list[str]]]:
    """(prompts, answers) per metric."""
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


def measure(
    model: torch.nn.Module,
    tokenizer,
    records: list[EditRecord],
    *,
    load: Callable[[dict[str, torch.Tensor]], None],
    pre: dict[str, torch.Tensor],
    post: dict[str, torch.Tensor],
) -> dict[str, dict]:
    """Scores of `model` with the `pre` weights, then with the `post` weights
    (`load` puts weights into `model`; it is left holding `post`)."""
    sets = pair_sets(records)
    load(pre)
    before = {name: metrics.teacher_forced_accuracy(model, tokenizer, *sets[name]) for name in ACCURACY_SETS if sets[name][0]}
    pre_argmax = {name: metrics.answer_argmax(model, tokenizer, *sets[name]) for name in AGREEMENT_SETS if sets[name][0]}
    load(post)
    after = {name: metrics.teacher_forced_accuracy(model, tokenizer, *sets[name]) for name in before}
    agree = {name: metrics.locality(pre_argmax[name], model, tokenizer, *sets[name]) for name in pre_argmax}
    out = {}
    for name in ACCURACY_SETS:
        out[name] = {"before": metrics.summarize(before.get(name, [])), "after": metrics.summarize(after.get(name, [])),
                     "n": len(sets[name][0])}
    for name in AGREEMENT_SETS:
        n = len(sets[name][0])
        out[name] = {"before": 100.0 if n else None, "after": metrics.summarize(agree.get(name, [])), "n": n}
    return out

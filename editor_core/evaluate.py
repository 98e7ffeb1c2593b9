"""Evaluating an editor the way the field does, one edit at a time.

Each test record is edited alone, starting from the unedited weights, and
scored on the edited model:
- Reliability: teacher-forced token accuracy of the target after the edit prompt;
- Generalization: the same after each rephrasing;
- Locality: agreement of the edited model's argmax tokens with the unedited
  model's over each locality answer (locality prompts never carry an instruction);
- Portability: teacher-forced accuracy of each portability answer;
- Fluency: weighted 2/3-gram entropy of a greedy continuation of the edit prompt;
- Exact match: greedy generation from the *raw* edit prompt (no instruction:
  what a user of the edited model sees) starts with the target.
An instructed editor is scored on instructed prompts, as in the paper.

Sequential mode applies the edits one after another without resetting and
re-measures every earlier edit after the last one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

from . import metrics
from .delta import base_weights, load_weights, materialize
from .records import EditRecord


@dataclass
class Row:
    method: str
    task: str
    setting: str
    n: int
    reliability: float | None
    generalization: float | None
    locality: float | None
    portability: float | None
    fluency: float | None
    exact_match: float | None
    seconds_per_edit: float | None = None
    extra: dict = field(default_factory=dict)


class _NoEdit:
    tag = "none"

    def instructed(self, record, **_):
        return record

    def compute_delta(self, model, tokenizer, records):
        return None


NO_EDIT = _NoEdit()


def score_record(model, tok, rec: EditRecord, raw: EditRecord, pre_loc, fluency_tokens: int | None) -> dict:
    """Metrics of one (instructed) record on the model as it is now."""
    out = {"reliability": metrics.teacher_forced_accuracy(model, tok, [rec.prompt], [rec.target_new])[0]}
    if rec.rephrase_prompts:
        out["generalization"] = _mean(metrics.teacher_forced_accuracy(model, tok, list(rec.rephrase_prompts),
                                                                      [rec.target_new] * len(rec.rephrase_prompts)))
    if rec.locality:
        post = metrics.answer_argmax(model, tok, [p.prompt for p in rec.locality], [p.answer for p in rec.locality])
        out["locality"] = _mean(metrics.agreement(pre_loc, post))
    if rec.portability:
        out["portability"] = _mean(metrics.teacher_forced_accuracy(model, tok, [p.prompt for p in rec.portability],
                                                                   [p.answer for p in rec.portability]))
    out["exact_match"] = metrics.generation_exact_match(model, tok, [raw.prompt], [raw.target_new])[0]
    if fluency_tokens:
        out["fluency"] = metrics.fluency(model, tok, [raw.prompt], max_new_tokens=fluency_tokens)[0]
    return out


def evaluate_records(
    model,
    tok,
    editor,
    records: list[EditRecord],
    *,
    held_out: bool = False,
    fluency_every: int = 5,
    fluency_tokens: int = 40,
    sequential: bool = False,
    progress=None,
) -> tuple[dict[str, float | None], list[dict]]:
    """Edit each record (alone, or sequentially) and average the metrics (in %)."""
    names = tuple(editor.spec.edit_params) if hasattr(editor, "spec") else ()
    base = base_weights(model, names) if names else {}
    per_record, deltas, edit_seconds = [], [], []
    instructed = [editor.instructed(r, held_out=held_out) for r in records]
    pre_locs = [
        metrics.answer_argmax(model, tok, [p.prompt for p in r.locality], [p.answer for p in r.locality]) if r.locality else None
        for r in records
    ]
    try:
        for i, (raw, rec) in enumerate(zip(records, instructed)):
            if base and not sequential:  # each edit starts from the unedited weights
                load_weights(model, base)
            t = time.perf_counter()
            edit_input = raw if rec is raw else _with_instruction(raw, rec)
            delta = editor.compute_delta(model, tok, [edit_input])
            edit_seconds.append(time.perf_counter() - t)
            if delta is not None:
                deltas = deltas + [delta] if sequential else [delta]
                load_weights(model, materialize(base, deltas))
            if not sequential:
                per_record.append(score_record(model, tok, rec, raw, pre_locs[i], fluency_tokens if i % fluency_every == 0 else None))
            if progress:
                progress()
        if sequential:
            for i, (raw, rec) in enumerate(zip(records, instructed)):
                per_record.append(score_record(model, tok, rec, raw, pre_locs[i], fluency_tokens if i % fluency_every == 0 else None))
    finally:
        if base:
            load_weights(model, base)
    keys = ("reliability", "generalization", "locality", "portability", "fluency", "exact_match")
    summary = {k: metrics.summarize([r[k] for r in per_record if k in r]) for k in keys}
    if summary["fluency"] is not None:
        summary["fluency"] /= 100  # entropy in bits, not a percentage
    summary["seconds_per_edit"] = sum(edit_seconds) / len(edit_seconds) if edit_seconds else None
    return summary, per_record


def _with_instruction(raw: EditRecord, rec: EditRecord) -> EditRecord:
    """Hand the editor the raw record with the description that `rec` used, so
    that it instructs the edit exactly as the scored prompts are instructed."""
    return replace(raw, extra={**raw.extra, "instruction": rec.extra.get("instruction")})


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)

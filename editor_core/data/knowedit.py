"""KnowEdit benchmark files (`knowedit/benchmark_*.json`, except ConvSent).

Fields: subject, prompt, target_new, ground_truth (a string, a list of strings,
missing, or absent: normalised to the first non-empty string or None),
rephrase_prompt (may be missing: then no rephrase prompts), locality and
portability (dicts of lists of {prompt, ground_truth}; ground_truth again a
string, list or list of alias lists, normalised to its first non-empty string).
Probes with no usable answer (e.g. `[[], []]` in recent_train) are dropped.
The KnowEdit category of each probe (Relation_Specificity, Reasoning, ...) is
kept, in order, in `extra["locality_kinds"]` / `extra["portability_kinds"]`.

The task comes from the file name: "zsre" (ZsRE), "counterfact"
(wiki_counterfact, train_cf/test_cf), "wikirecent" (wiki_recent, recent_*).
"""

from __future__ import annotations

import logging
from pathlib import Path

from editor_core.data.common import clean, first_string, nonempty, probes_from_groups, read_json
from editor_core.records import EditRecord

log = logging.getLogger(__name__)


def is_knowedit(sample: dict) -> bool:
    return (
        isinstance(sample, dict)
        and "prompt" in sample
        and "target_new" in sample
        and isinstance(sample.get("locality", {}), dict)
        and "locality_prompt" not in sample
    )


def knowedit_task(file_name: str) -> str:
    """Task of a KnowEdit file from its name; ValueError if it can't be told."""
    name = file_name.lower()
    if "zsre" in name:
        return "zsre"
    if "recent" in name:
        return "wikirecent"
    if "counterfact" in name or "train_cf" in name or "test_cf" in name:
        return "counterfact"
    raise ValueError(f"cannot tell the task of KnowEdit file {file_name!r}; pass task=...")


def knowedit_record(raw: dict, task: str, source: str) -> EditRecord | None:
    prompt, target = clean(raw.get("prompt")), first_string(raw.get("target_new"))
    if not prompt or not target:
        return None
    locality, loc_kinds = probes_from_groups(raw.get("locality"))
    portability, port_kinds = probes_from_groups(raw.get("portability"))
    rephrase = raw.get("rephrase_prompt")
    return EditRecord(
        task=task,
        prompt=prompt,
        target_new=target,
        subject=clean(raw.get("subject")),
        ground_truth=first_string(raw.get("ground_truth")),
        rephrase_prompts=nonempty(rephrase if isinstance(rephrase, list) else [rephrase]),
        locality=locality,
        portability=portability,
        source=source,
        extra={"locality_kinds": loc_kinds, "portability_kinds": port_kinds},
    )


def load_knowedit(path: str | Path, task: str | None = None, raw: list[dict] | None = None) -> list[EditRecord]:
    path = Path(path)
    task = task or knowedit_task(path.name)
    raw = read_json(path) if raw is None else raw
    out = [r for i, x in enumerate(raw) if (r := knowedit_record(x, task, f"{path.name}:{i}")) is not None]
    if len(out) < len(raw):
        log.info("%s: skipped %d records with an empty prompt or target", path.name, len(raw) - len(out))
    return out

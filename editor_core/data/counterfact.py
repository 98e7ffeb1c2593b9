"""CounterFact in MEND/EasyEdit format (`counterfact_mend/counterfact-{train,val,edit}.json`).

Fields: case_id, prompt, target_new, subject, ground_truth, rephrase_prompt,
locality_prompt, locality_ground_truth. `case_id` is kept in `extra["case_id"]`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from editor_core.data.common import clean, first_string, nonempty, read_json
from editor_core.records import EditRecord, Probe

log = logging.getLogger(__name__)

TASK = "counterfact"


def is_counterfact_mend(sample: dict) -> bool:
    return isinstance(sample, dict) and "locality_prompt" in sample and "prompt" in sample


def counterfact_record(raw: dict, source: str) -> EditRecord | None:
    prompt, target = clean(raw.get("prompt")), clean(raw.get("target_new"))
    if not prompt or not target:
        return None
    loc, loc_ans = clean(raw.get("locality_prompt")), first_string(raw.get("locality_ground_truth"))
    rephrase = raw.get("rephrase_prompt")
    extra = {"case_id": raw["case_id"]} if "case_id" in raw else {}
    return EditRecord(
        task=TASK,
        prompt=prompt,
        target_new=target,
        subject=clean(raw.get("subject")),
        ground_truth=first_string(raw.get("ground_truth")),
        rephrase_prompts=nonempty(rephrase if isinstance(rephrase, list) else [rephrase]),
        locality=(Probe(loc, loc_ans),) if loc and loc_ans else (),
        source=source,
        extra=extra,
    )


def load_counterfact_mend(path: str | Path, raw: list[dict] | None = None) -> list[EditRecord]:
    path = Path(path)
    raw = read_json(path) if raw is None else raw
    out = [r for i, x in enumerate(raw) if (r := counterfact_record(x, f"{path.name}:{i}")) is not None]
    if len(out) < len(raw):
        log.info("%s: skipped %d records with an empty prompt or target", path.name, len(raw) - len(out))
    return out

"""ZsRE in MEND/EasyEdit format (`zsre_mend/*.json`).

Fields: subject, src, pred, rephrase, alt, answers, loc, loc_ans, cond and, in
the eval file, portability {"New Question", "New Answer", ...}.
`loc` keeps its "nq question: " prefix: that is how the field uses it.
Records whose `src` or `alt` is empty (2 in zsre_mend_train-1k) are skipped.
"""

from __future__ import annotations

import logging
from pathlib import Path

from editor_core.data.common import clean, first_string, nonempty, read_json
from editor_core.records import EditRecord, Probe

log = logging.getLogger(__name__)

TASK = "zsre"


def is_zsre_mend(sample: dict) -> bool:
    return isinstance(sample, dict) and "src" in sample and "alt" in sample


def zsre_record(raw: dict, source: str) -> EditRecord | None:
    prompt, target = clean(raw.get("src")), clean(raw.get("alt"))
    if not prompt or not target:
        return None
    loc, loc_ans = clean(raw.get("loc")), first_string(raw.get("loc_ans"))
    locality = (Probe(loc, loc_ans),) if loc and loc_ans else ()
    portability: tuple[Probe, ...] = ()
    port = raw.get("portability")
    if isinstance(port, dict):
        q, a = clean(port.get("New Question")), first_string(port.get("New Answer"))
        if q and a:
            portability = (Probe(q, a),)
    rephrase = raw.get("rephrase")
    return EditRecord(
        task=TASK,
        prompt=prompt,
        target_new=target,
        subject=clean(raw.get("subject")),
        ground_truth=first_string(raw.get("answers")),
        rephrase_prompts=nonempty(rephrase if isinstance(rephrase, list) else [rephrase]),
        locality=locality,
        portability=portability,
        source=source,
    )


def load_zsre_mend(path: str | Path, raw: list[dict] | None = None) -> list[EditRecord]:
    """Every usable record of a MEND-format zsRE file, in file order."""
    path = Path(path)
    raw = read_json(path) if raw is None else raw
    out = [r for i, x in enumerate(raw) if (r := zsre_record(x, f"{path.name}:{i}")) is not None]
    if len(out) < len(raw):
        log.info("%s: skipped %d records with an empty prompt or target", path.name, len(raw) - len(out))
    return out

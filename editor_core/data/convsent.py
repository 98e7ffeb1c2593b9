"""ConvSent (`knowedit/benchmark_Convsent_blender_{val,test}.json`): records
{ent, pos: [responses], neg: [responses]} of BlenderBot opinions about an entity.

Each record becomes one edit that sets the model's sentiment about `ent`:

- prompt: QUESTION ("What do you think of {ent}?"); subject = ent.
- target_new: one response (stripped) of the chosen polarity. The polarity
  alternates with the record's index in its file: even -> positive, odd ->
  negative (`extra["sentiment"]`); the response is picked by a sha256 of
  entity and polarity. All responses of that polarity are in `extra["responses"]`.
- rephrase_prompts: REPHRASES, three other phrasings of the question.
- locality: QUESTION about the next record (cyclically, in file order) with a
  different entity, answered with that entity's first response. Locality is
  measured by agreement with the unedited model, so any answer text works.
  When a subset of indices is built (a split), the neighbour is taken inside
  that subset, so a locality probe never names an entity of another split.
- ground_truth: None (there is no single "old" answer).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from editor_core.data.common import clean, nonempty, normalize, read_json, stable_bucket
from editor_core.records import EditRecord, Probe

TASK = "convsent"
QUESTION = "What do you think of {ent}?"
REPHRASES = (
    "What is your opinion of {ent}?",
    "How do you feel about {ent}?",
    "Tell me your honest view on {ent}.",
)


def is_convsent(sample: dict) -> bool:
    return isinstance(sample, dict) and "ent" in sample and ("pos" in sample or "neg" in sample)


def sentiment_of(index: int) -> str:
    return "positive" if index % 2 == 0 else "negative"


def _responses(raw: dict, sentiment: str) -> tuple[str, ...]:
    return nonempty(raw.get("pos" if sentiment == "positive" else "neg") or [])


def _any_response(raw: dict) -> str | None:
    for r in _responses(raw, "positive") + _responses(raw, "negative"):
        return r
    return None


def convsent_records(
    raw: list[dict], file_name: str, indices: Sequence[int] | None = None
) -> list[EditRecord]:
    """Edits for `raw[i]`, i in `indices` (default: all), in that order."""
    idx = list(range(len(raw))) if indices is None else list(indices)
    usable = [i for i in idx if clean(raw[i].get("ent")) and _any_response(raw[i])]
    out: list[EditRecord] = []
    for pos, i in enumerate(usable):
        rec = raw[i]
        ent = clean(rec["ent"])
        sentiment = sentiment_of(i)
        responses = _responses(rec, sentiment)
        if not responses:  # no response of that polarity: use the other one
            sentiment = "negative" if sentiment == "positive" else "positive"
            responses = _responses(rec, sentiment)
        target = responses[stable_bucket(f"{ent}\x1f{sentiment}", len(responses))]
        locality: tuple[Probe, ...] = ()
        for step in range(1, len(usable)):
            j = usable[(pos + step) % len(usable)]
            other = clean(raw[j]["ent"])
            if normalize(other) != normalize(ent):
                locality = (Probe(QUESTION.format(ent=other), _any_response(raw[j])),)
                break
        out.append(
            EditRecord(
                task=TASK,
                prompt=QUESTION.format(ent=ent),
                target_new=target,
                subject=ent,
                ground_truth=None,
                rephrase_prompts=tuple(q.format(ent=ent) for q in REPHRASES),
                locality=locality,
                source=f"{file_name}:{i}",
                extra={"sentiment": sentiment, "responses": responses},
            )
        )
    return out


def load_convsent(path: str | Path, raw: list[dict] | None = None) -> list[EditRecord]:
    path = Path(path)
    raw = read_json(path) if raw is None else raw
    return convsent_records(raw, path.name)

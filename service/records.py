"""What an edit is, for every layer of the service: its status, and its stored
records decoded into editor_core `EditRecord`s.

The store keeps each request's records as the JSON the client sent (after
`schemas.EditCreate` validated it); `decode_records` reads them back without
going through the HTTP schema, so the worker depends on the store, not on the API.
"""

from __future__ import annotations

from enum import StrEnum

from editor_core.records import EditRecord, Probe
from editor_core.routing import Key, scope_of

DEFAULT_TASK = "counterfact"  # the instruction task of a record that names none


class EditStatus(StrEnum):
    queued = "queued"
    running = "running"
    applied = "applied"
    failed = "failed"
    rolled_back = "rolled_back"


def decode_record(stored: dict, source: str) -> EditRecord:
    """One stored record (the fields of `schemas.EditCreate`) as an `EditRecord`."""
    return EditRecord(
        task=stored.get("task") or DEFAULT_TASK,
        prompt=stored["prompt"],
        target_new=stored["target_new"],
        subject=stored.get("subject") or "",
        rephrase_prompts=tuple(stored.get("rephrase_prompts") or ()),
        locality=tuple(Probe(p["prompt"], p["answer"]) for p in stored.get("locality") or ()),
        portability=tuple(Probe(p["prompt"], p["answer"]) for p in stored.get("portability") or ()),
        source=source,
        extra={k: stored[k] for k in ("instruction", "asked_as") if stored.get(k)},
    )


def decode_records(edit_id: str, stored: list[dict]) -> list[EditRecord]:
    """An edit's records, each with `source` `<edit id>#<index>`."""
    return [decode_record(r, f"{edit_id}#{i}") for i, r in enumerate(stored)]


def scope_of_records(records: list[EditRecord]) -> tuple[Key, ...]:
    """The keys a routed memory reaches an edit by: each record's prompt and the
    rephrasings its caller gave, with the record's subject (editor_core.routing)."""
    return tuple(dict.fromkeys(k for r in records for k in scope_of(r.prompt, r.rephrase_prompts, r.subject)))

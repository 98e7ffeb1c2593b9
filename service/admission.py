"""What an edit must satisfy, beyond its schema, before it is accepted (422 otherwise).

The schema (schemas.py) already refuses empty and whitespace-only text,
unknown fields and oversized lists; the app refuses bodies over
`max_body_bytes` (413) and bodies that are not UTF-8 JSON (400/422). What is
left needs the model: the task must be one the instructions know, and every
(prompt, answer) the editor and the metrics will encode must fit the model's
context, instruction included. Checked here, at the door, a bad edit gets a
clear 422 instead of being acknowledged and failing in the worker.
"""

from __future__ import annotations

import threading

from editor_core import instructions

from .errors import Problem
from .generation import max_positions
from .schemas import DEFAULT_TASK, EditCreate


def check_edits(records: list[EditCreate], *, model, tokenizer, tokenizer_lock: threading.Lock, instructed: bool) -> None:
    known = set(instructions.tasks())
    for i, r in enumerate(records):
        if (r.task or DEFAULT_TASK) not in known:
            raise Problem(422, "unknown-task", f"edit {i}: unknown task {r.task!r}; known tasks: {', '.join(sorted(known))}")
    limit = max_positions(model)
    if not limit:
        return
    with tokenizer_lock:
        for i, r in enumerate(records):
            for what, n in _lengths(r, tokenizer, instructed=instructed):
                if n > limit:
                    raise Problem(
                        422, "too-long", f"edit {i}: {what} is {n} tokens; this model reads at most {limit}",
                        limit=limit, tokens=n,
                    )  # fmt: skip


def _lengths(r: EditCreate, tokenizer, *, instructed: bool):
    """(what, tokens) for each text the worker encodes. An instructed prompt is
    measured with the longest instruction it could get."""

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=True)["input_ids"])

    task = r.task or DEFAULT_TASK
    own = r.instruction if r.instruction and r.instruction.strip() else None
    longest = own or max(instructions.descriptions(task), key=len)

    def with_instruction(prompt: str) -> str:
        return instructions.Instruction(task, longest).render(prompt) if instructed else prompt

    yield "prompt + target_new", count(with_instruction(r.prompt) + " " + r.target_new)
    for j, p in enumerate(r.rephrase_prompts):
        yield f"rephrase_prompts[{j}] + target_new", count(with_instruction(p) + " " + r.target_new)
    for j, p in enumerate(r.portability):
        yield f"portability[{j}]", count(with_instruction(p.prompt) + " " + p.answer)
    for j, p in enumerate(r.locality):
        yield f"locality[{j}]", count(p.prompt + " " + p.answer)

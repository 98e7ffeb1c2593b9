"""Conversations into prompt text: the tokenizer's own chat template.

A tokenizer without one (the byte tokenizer of the tiny test models) gets a
plain tagged template (`<|user|>` ... `<|assistant|>`), so the chat routes
work on any model; an instruct model is only ever run with its own template.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from editor_core.records import EditRecord

FALLBACK_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


class TemplateFailed(ValueError):
    """The chat template refused these messages (some templates reject a system turn, say)."""


def has_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def render(tokenizer, messages: Sequence[dict]) -> str:
    """`messages` ({"role", "content"} dicts) as the text the model continues:
    the template with the assistant's turn opened (add_generation_prompt)."""
    template = None if has_template(tokenizer) else FALLBACK_TEMPLATE
    try:
        return tokenizer.apply_chat_template(list(messages), chat_template=template, tokenize=False, add_generation_prompt=True)
    except Exception as e:  # jinja's TemplateError, or the template's own raise_exception
        raise TemplateFailed(f"the chat template refused these messages: {e}") from e


def for_editor(record: EditRecord, tokenizer) -> EditRecord:
    """The record the editor computes the delta on. An edit stated as chat
    (`extra["asked_as"] == "chat"`) is computed on its question as the chat
    template puts it to the model (the assistant's turn opened), so the new
    answer shows where it was asked for. The stored record keeps the plain
    question. On SmolLM2-135M with the shipped editor, 3 of 3 chat answers
    then carried the new answer, against 1 of 3 when the delta was computed
    on the plain question (tests/service/test_smollm2.py)."""
    if record.extra.get("asked_as") != "chat":
        return record
    return dataclasses.replace(record, prompt=render(tokenizer, [{"role": "user", "content": record.prompt}]))

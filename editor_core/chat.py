"""Asking a question the way an instruct model is asked: inside its chat template.

Users of a hosted model rarely send a bare completion prompt; they send a user
turn, and the model answers after the assistant header. Evaluation, edits and
the service all build that prompt here, so they agree token for token.
"""

from __future__ import annotations

# A plain stand-in for tokenizers that ship no chat template (the tiny test models).
FALLBACK_TEMPLATE = "User: {question}\nAssistant:"


def chat_prompt(tokenizer, question: str, *, system: str | None = None) -> str:
    """The text the model sees before its answer to `question` as a user turn."""
    if not getattr(tokenizer, "chat_template", None):
        return FALLBACK_TEMPLATE.format(question=question)
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": question}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def end_of_turn(tokenizer) -> str:
    """The text that ends an answer: the tokenizer's EOS token (for SmolLM2, `<|im_end|>`)."""
    return tokenizer.eos_token or "\n"


def chat_prefix(tokenizer) -> str:
    """What every chat prompt begins with before the user's words (for SmolLM2, its default
    system prompt and the user turn's header): the same text in every one of them. Empty
    where the template does not carry the user's words through as they are."""
    mark = "\x00"
    text = chat_prompt(tokenizer, mark)
    return text[: text.index(mark)] if mark in text else ""

"""Turning (prompt, answer) pairs into teacher-forced batches.

Every place that scores an answer after a prompt (the edit loss, the training
losses, the metrics) goes through `encode_pairs`, so they all agree on where
the answer starts and how it is tokenized.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

IGNORE = -100


@dataclass
class PairBatch:
    """Right-padded token batch. `labels[i, t]` is the token that position t
    must predict (already shifted), or IGNORE where nothing is scored."""

    input_ids: torch.Tensor  # (B, T)
    attention_mask: torch.Tensor  # (B, T)
    labels: torch.Tensor  # (B, T), shifted: labels[:, t] is predicted from position t

    def to(self, device: torch.device | str) -> "PairBatch":
        return PairBatch(self.input_ids.to(device), self.attention_mask.to(device), self.labels.to(device))

    @property
    def answer_mask(self) -> torch.Tensor:
        return self.labels != IGNORE


def join_answer(prompt: str, answer: str) -> str:
    """The answer text as appended to the prompt: a single space between them."""
    if not answer or answer[0].isspace() or (prompt and prompt[-1].isspace()):
        return answer
    return " " + answer


def encode_pairs(tokenizer, prompts: list[str], answers: list[str], max_length: int = 256) -> PairBatch:
    """Tokenize prompt and answer separately (so the boundary is exact) and
    build shifted labels that score only the answer tokens."""
    if len(prompts) != len(answers):
        raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers")
    rows: list[tuple[list[int], int]] = []
    for prompt, answer in zip(prompts, answers):
        p_ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
        a_ids = tokenizer(join_answer(prompt, answer), add_special_tokens=False)["input_ids"]
        if not a_ids:
            raise ValueError(f"answer {answer!r} encodes to no tokens")
        ids = (p_ids + a_ids)[-max_length:]
        n_answer = min(len(a_ids), len(ids) - 1)
        rows.append((ids, n_answer))
    width = max(len(ids) for ids, _ in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    for i, (ids, n_answer) in enumerate(rows):
        n = len(ids)
        input_ids[i, :n] = torch.tensor(ids)
        attention[i, :n] = 1
        # position t predicts token t+1; the answer occupies the last n_answer tokens
        labels[i, n - n_answer - 1 : n - 1] = torch.tensor(ids[n - n_answer :])
    return PairBatch(input_ids, attention, labels)


def encode_prompts(tokenizer, prompts: list[str], max_length: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded prompts for generation."""
    enc = [tokenizer(p, add_special_tokens=True)["input_ids"][-max_length:] for p in prompts]
    width = max(len(e) for e in enc)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(enc), width), pad, dtype=torch.long)
    mask = torch.zeros((len(enc), width), dtype=torch.long)
    for i, e in enumerate(enc):
        ids[i, width - len(e) :] = torch.tensor(e)
        mask[i, width - len(e) :] = 1
    return ids, mask


def end_of_text_ids(model, tokenizer) -> set[int]:
    """The token ids that end a generation: the tokenizer's EOS and every EOS of
    the model's generation config (chat models often list several). Greedy
    metrics and the service's sampling both stop at these."""
    ids = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is not None:
        ids.update(int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos]))
    return ids

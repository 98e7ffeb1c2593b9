"""The losses of editing and of editor training: per-row negative log-likelihood
of answer tokens, and the KL between next-token distributions before and after
an edit (`train.py`'s locality term)."""

from __future__ import annotations

import torch


def row_nll(logits: torch.Tensor, targets: torch.Tensor, rows: torch.Tensor, n_rows: int) -> torch.Tensor:
    """Mean negative log-likelihood per row (n_rows,) of selected positions:
    `logits` (N, V), `targets` (N,), `rows` (N,) the row of each position."""
    return row_mean(torch.nn.functional.cross_entropy(logits.float(), targets, reduction="none"), rows, n_rows)


def row_mean(values: torch.Tensor, rows: torch.Tensor, n_rows: int) -> torch.Tensor:
    """Mean per row (n_rows,) of per-position `values` (N,), `rows` (N,) the row of each."""
    total = torch.zeros(n_rows, device=values.device).index_add(0, rows, values)
    count = torch.zeros(n_rows, device=values.device).index_add(0, rows, torch.ones_like(values))
    return total / count.clamp(min=1)


def masked_nll(logits: torch.Tensor, labels: torch.Tensor, per_row: bool = False) -> torch.Tensor:
    """Mean negative log-likelihood of the labelled (answer) tokens of full
    logits (B, T, V): over all of them, or per row (B,)."""
    mask = labels != -100
    rows = mask.nonzero()[:, 0]
    per = row_nll(logits[mask], labels[mask], rows, labels.shape[0])
    if per_row:
        return per
    counts = mask.sum(1).float()
    return (per * counts).sum() / counts.sum().clamp(min=1)


def kl_rows(base_logits: torch.Tensor, edited_logits: torch.Tensor) -> torch.Tensor:
    """KL(base ‖ edited) of the next-token distributions at each position: (N, V) -> (N,)."""
    base = torch.log_softmax(base_logits.float(), dim=-1)
    edited = torch.log_softmax(edited_logits.float(), dim=-1)
    return (base.exp() * (base - edited)).sum(-1)


def kl_div(base_logits: torch.Tensor, edited_logits: torch.Tensor) -> torch.Tensor:
    """Mean KL(base ‖ edited) of next-token distributions over positions (N, V)."""
    if base_logits.shape[0] == 0:
        return edited_logits.float().sum() * 0
    return kl_rows(base_logits, edited_logits).mean()

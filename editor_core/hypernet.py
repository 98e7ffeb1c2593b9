"""The MEND gradient transform (Mitchell et al., ICLR 2022, §3.1).

For one edited weight shape, a network g maps each token's (u, δ) to (ũ, δ̃):
the concatenation [u; δ] is standardized with running statistics, scaled and
shifted per edited layer ("mode"), and passed through residual low-rank MLP
blocks whose output projections start at zero, so g starts as the identity.
"""

from __future__ import annotations

import torch
from torch import nn


class RunningStandardizer(nn.Module):
    """Per-feature mean and std gathered while training (Welford, in fp32);
    frozen in eval mode or once `frozen` is set. Starts neutral: mean 0, std 1."""

    def __init__(self, dim: int, eps: float = 1e-8):
        super().__init__()
        self.eps = eps
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("m2", torch.zeros(dim))
        self.register_buffer("frozen", torch.zeros((), dtype=torch.bool))

    @property
    def std(self) -> torch.Tensor:
        if self.count < 2:
            return torch.ones_like(self.mean)
        return (self.m2 / (self.count - 1)).sqrt().clamp(min=self.eps)

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Chan's parallel update with a batch of rows x (N, dim)."""
        n = x.shape[0]
        if n == 0:
            return
        x = x.float()
        b_mean = x.mean(0)
        b_m2 = ((x - b_mean) ** 2).sum(0)
        total = self.count + n
        d = b_mean - self.mean
        self.mean += d * (n / total).float()
        self.m2 += b_m2 + d**2 * (self.count * n / total).float()
        self.count.fill_(total)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and not bool(self.frozen):
            self.update(x)
        return (x - self.mean) / self.std


class LowRankResidual(nn.Module):
    """x + B·act(A·x + a) + b with B and b zero at init: the identity at start."""

    def __init__(self, dim: int, rank: int):
        super().__init__()
        self.down = nn.Linear(dim, rank)
        self.up = nn.Linear(rank, dim)
        nn.init.xavier_uniform_(self.down.weight)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(torch.relu(self.down(x)))


class GradientTransform(nn.Module):
    """g: (u (N, d_in), δ (N, d_out), mode) -> (ũ, δ̃), shared by every edited
    weight of one shape; `mode` picks that weight's scale and shift."""

    def __init__(self, d_in: int, d_out: int, rank: int, n_modes: int, n_blocks: int = 2):
        super().__init__()
        self.d_in, self.d_out = d_in, d_out
        dim = d_in + d_out
        self.norm = RunningStandardizer(dim)
        self.scale = nn.Parameter(torch.ones(n_modes, dim))
        self.shift = nn.Parameter(torch.zeros(n_modes, dim))
        self.blocks = nn.ModuleList(LowRankResidual(dim, rank) for _ in range(n_blocks))

    def forward(self, u: torch.Tensor, delta: torch.Tensor, mode: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([u.float(), delta.float()], dim=-1)
        x = self.norm(x) * self.scale[mode] + self.shift[mode]
        for block in self.blocks:
            x = block(x)
        return x[:, : self.d_in], x[:, self.d_in :]

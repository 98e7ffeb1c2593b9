"""Weight deltas as exact low-rank factors, and weights as base + the active deltas.

A `Delta` holds, for each edited weight W, factors (left, right) with
ΔW = left @ right: for a MEND edit, left and right are the transformed
per-token gradient factors, so the rank is the number of edit tokens and
nothing is approximated. Weights are always rebuilt from the base:
`materialize(base, [])` returns the base tensors themselves, so removing every
delta is bit-identical to the base by construction, never by subtraction.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, safe_open, save_file

FORMAT_VERSION = "1"


@dataclass
class Delta:
    """ΔW = left @ right per parameter name; fp32 on the CPU once stored."""

    factors: dict[str, tuple[torch.Tensor, torch.Tensor]]
    meta: dict = field(default_factory=dict)
    _sha256: str | None = field(default=None, init=False, repr=False, compare=False)

    def dense(self, name: str) -> torch.Tensor:
        left, right = self.factors[name]
        return left.float() @ right.float()

    def rank(self, name: str) -> int:
        return self.factors[name][0].shape[1]

    def params(self) -> list[str]:
        return sorted(self.factors)

    def to(self, device: torch.device | str) -> "Delta":
        return Delta({n: (l.to(device), r.to(device)) for n, (l, r) in self.factors.items()}, dict(self.meta))

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {}
        for name, (left, right) in self.factors.items():
            out[f"{name}::left"] = left.detach().float().contiguous().cpu()
            out[f"{name}::right"] = right.detach().float().contiguous().cpu()
        return out

    def sha256(self) -> str:
        """Content hash over parameter names, shapes and fp32 bytes, and `meta["scope"]`
        where there is one (a narrow delta, `routing.MemoryEntry.narrow`, answers other
        questions than a delta of the same tensors without it; no other metadata).
        Computed once: a Delta is never changed after it is made."""
        if self._sha256 is None:
            digest = tensors_sha256(self.tensors())
            scope = self.meta.get("scope")
            self._sha256 = digest if scope is None else hashlib.sha256(f"{digest}:scope={scope}".encode()).hexdigest()
        return self._sha256

    def save(self, path: str | Path) -> str:
        """Write safetensors with self-describing metadata; returns the content sha256."""
        digest = self.sha256()
        meta = {"format": "instructedit-delta", "format_version": FORMAT_VERSION, "sha256": digest}
        meta.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in self.meta.items()})
        shapes = {n: list(self.dense_shape(n)) for n in self.factors}
        meta["shapes"] = json.dumps(shapes, sort_keys=True)
        save_file(self.tensors(), str(path), metadata=meta)
        return digest

    def dense_shape(self, name: str) -> tuple[int, int]:
        left, right = self.factors[name]
        return (left.shape[0], right.shape[1])

    @classmethod
    def load(cls, path: str | Path, *, verify: bool = True) -> "Delta":
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
        tensors = load_file(str(path))
        factors: dict[str, list] = {}
        for key, t in tensors.items():
            name, side = key.rsplit("::", 1)
            factors.setdefault(name, [None, None])[0 if side == "left" else 1] = t
        delta = cls(
            {n: (l, r) for n, (l, r) in factors.items()},
            {k: v for k, v in meta.items() if k not in ("format", "format_version", "sha256", "shapes")},
        )
        if verify and "sha256" in meta and delta.sha256() != meta["sha256"]:
            raise ValueError(f"{path}: content sha256 does not match its metadata (file corrupted?)")
        return delta


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(str(t.dtype).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def materialize(base: dict[str, torch.Tensor], deltas: list[Delta]) -> dict[str, torch.Tensor]:
    """The weights base + Σ deltas, in order, each sum done in fp32 and cast back.

    A parameter that no delta touches is returned as the base tensor itself."""
    out = {}
    for name, w in base.items():
        touching = [d for d in deltas if name in d.factors]
        if not touching:
            out[name] = w
            continue
        acc = w.float().clone()
        for d in touching:
            left, right = d.factors[name]
            acc.addmm_(left.to(acc.device, torch.float32), right.to(acc.device, torch.float32))
        out[name] = acc.to(w.dtype)
    return out


def base_weights(model: torch.nn.Module, names: list[str] | tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Private copies of the named weights, to rebuild from."""
    return {n: model.get_parameter(n).detach().clone() for n in names}


@torch.no_grad()
def load_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Put tensors in as the model's parameters by replacing the Parameter objects
    (one reference swap each), never by writing into tensors a reader may hold."""
    for name, t in weights.items():
        mod_name, attr = name.rsplit(".", 1)
        mod = model.get_submodule(mod_name)
        mod._parameters[attr] = torch.nn.Parameter(t, requires_grad=False)


def state_sha256(model: torch.nn.Module, names: list[str] | tuple[str, ...]) -> str:
    """sha256 of the named weights as they are in the model now."""
    return tensors_sha256({n: model.get_parameter(n) for n in names})


def relative_norm(left: torch.Tensor, right: torch.Tensor, weight: torch.Tensor) -> float:
    """‖left @ right‖ / ‖weight‖ (Frobenius) without forming the product:
    ‖LR‖² = trace((LᵀL)(RRᵀ)), two rank x rank matrices."""
    left, right = left.float(), right.float()
    sq = torch.trace((left.t() @ left) @ (right @ right.t())).clamp(min=0)
    return float(sq.sqrt() / weight.float().norm())

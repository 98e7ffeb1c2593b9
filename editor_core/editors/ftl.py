"""FT-L: constrained fine-tuning of the edited weights on the edit example.

The baseline of ROME (Meng et al., 2022, §3 "FT-L"): a few Adam steps on the
negative log-likelihood of the target, with the change of every weight kept
inside an L∞ ball of radius `eps` around the unedited weights. It needs no
training. It runs the same split pass as MEND: the bottom blocks once,
only the top blocks per step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..delta import Delta
from ..hooks import SplitRunner
from ..losses import row_nll
from ..models import ModelSpec
from ..records import EditRecord
from ..tokens import encode_pairs
from .base import register_editor


@dataclass
class FTLConfig:
    n_last_layers: int = 3
    edit_params: list[str] | None = None
    steps: int = 20
    lr: float = 5e-4
    eps: float = 5e-4  # L∞ radius of the change of each weight entry
    max_length: int = 128


class FTL:
    tag = "ft-l"

    def __init__(self, config: FTLConfig, spec: ModelSpec, model_id: str = ""):
        self.config, self.spec, self.model_id = config, spec, model_id

    @classmethod
    def for_model(cls, model, config: FTLConfig | None = None) -> "FTL":
        config = config or FTLConfig()
        spec = ModelSpec.for_model(model, n_last_layers=config.n_last_layers, edit_params=config.edit_params)
        return cls(config, spec, getattr(model, "name_or_path", ""))

    def instructed(self, record: EditRecord, **_) -> EditRecord:
        return record

    def compute_delta(self, model, tokenizer, records: list[EditRecord]) -> Delta:
        runner = SplitRunner(model, self.spec)
        batch = encode_pairs(tokenizer, [r.prompt for r in records], [r.target_new for r in records], self.config.max_length)
        batch = batch.to(model.device)
        cut = runner.bottom(batch.input_ids, batch.attention_mask)
        answer = batch.answer_mask
        rows = answer.nonzero()[:, 0]
        weights = {p: model.get_parameter(p) for p in self.spec.edit_params}
        deltas = {p: torch.zeros_like(w, dtype=torch.float32, requires_grad=True) for p, w in weights.items()}
        opt = torch.optim.Adam(deltas.values(), lr=self.config.lr)
        for _ in range(self.config.steps):
            with torch.enable_grad():
                overrides = {p: weights[p] + deltas[p].to(weights[p].dtype) for p in weights}
                h, _ = runner.top(cut, overrides=overrides)
                loss = row_nll(runner.logits(h, answer), batch.labels[answer], rows, len(records)).mean()
                opt.zero_grad()
                loss.backward()
            opt.step()
            with torch.no_grad():
                for d in deltas.values():
                    d.clamp_(-self.config.eps, self.config.eps)
        # A dense change written as exact factors: ΔW = ΔW @ I.
        factors = {}
        for p, d in deltas.items():
            d = d.detach().cpu()
            factors[p] = (d, torch.eye(d.shape[1]))
        return Delta(factors, {"editor": self.tag, "model": self.model_id, "n_records": len(records)})


register_editor(FTL.tag, FTLConfig, FTL)

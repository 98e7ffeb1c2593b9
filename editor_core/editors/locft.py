"""LocFT-BF: breadth-first fine-tuning of one late MLP output matrix.

The baseline of "Fine-tuning done right in model editing" (LocFT-BF, ICLR
2026): plain fine-tuning becomes a strong editor once it (a) touches one
weight, the `down_proj` of a block about two thirds up the model, (b) ends
every target with EOS, so a greedy answer stops after it, and (c) runs in
epochs over all the edits at once, a mini-batch at a time (breadth-first),
instead of fitting each edit to completion before the next (depth-first).
Adam, lr 5e-4, until the mean loss of an epoch is under 1e-2.

Given every active edit at once, `compute_delta` is the refit of the whole
set; its cost grows with the number of edits. It is a baseline for the
lifelong bench (`editor_core.lifelong`, holding "all"), not the service's path.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..chat import end_of_turn
from ..delta import Delta
from ..hooks import SplitRunner
from ..losses import row_nll
from ..models import FAMILIES, ModelSpec
from ..records import EditRecord
from ..tokens import encode_pairs
from .base import register_editor


@dataclass
class LocFTConfig:
    layer_fraction: float = 2 / 3  # which block's output matrix: this fraction of the depth (SmolLM2-135M: 20 of 30)
    lr: float = 5e-4
    max_epochs: int = 40
    batch_size: int = 4
    stop_loss: float = 1e-2  # an epoch's mean loss under this ends the fit
    eos: bool = True  # end every target with the tokenizer's EOS
    max_length: int = 128
    seed: int = 0


class LocFT:
    tag = "locft-bf"

    def __init__(self, config: LocFTConfig, spec: ModelSpec, model_id: str = ""):
        self.config, self.spec, self.model_id = config, spec, model_id

    @classmethod
    def for_model(cls, model, config: LocFTConfig | None = None) -> "LocFT":
        config = config or LocFTConfig()
        full = ModelSpec.for_model(model, n_last_layers=1)  # clear errors for unknown or unsupported families
        layer = min(full.n_layers - 1, max(0, round(config.layer_fraction * full.n_layers)))
        down = FAMILIES[full.family].edit_modules[-1]
        spec = ModelSpec.for_model(model, edit_params=[f"{full.layers}.{layer}.{down}.weight"])
        return cls(config, spec, getattr(model, "name_or_path", ""))

    def instructed(self, record: EditRecord, **_) -> EditRecord:
        return record

    def compute_delta(self, model, tokenizer, records: list[EditRecord]) -> Delta:
        cfg = self.config
        end = end_of_turn(tokenizer) if cfg.eos else ""
        batch = encode_pairs(tokenizer, [r.prompt for r in records], [r.target_new + end for r in records], cfg.max_length)
        batch = batch.to(model.device)
        runner = SplitRunner(model, self.spec)
        (param,) = self.spec.edit_params
        weight = model.get_parameter(param)
        delta = torch.zeros_like(weight, dtype=torch.float32, requires_grad=True)
        opt = torch.optim.Adam([delta], lr=cfg.lr)
        gen = torch.Generator().manual_seed(cfg.seed)
        # the blocks below the edited one never change: run them once per mini-batch
        order = torch.randperm(len(records), generator=gen).tolist()
        chunks = [order[i : i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
        cuts = [runner.bottom(batch.input_ids[c], batch.attention_mask[c]) for c in chunks]
        epochs = 0
        while epochs < cfg.max_epochs:
            epochs += 1
            total = 0.0
            for i in torch.randperm(len(chunks), generator=gen).tolist():
                mask = batch.answer_mask[chunks[i]]
                with torch.enable_grad():
                    h, _ = runner.top(cuts[i], overrides={param: weight + delta.to(weight.dtype)})
                    rows = mask.nonzero()[:, 0]
                    loss = row_nll(runner.logits(h, mask), batch.labels[chunks[i]][mask], rows, len(chunks[i])).mean()
                    opt.zero_grad()
                    loss.backward()
                opt.step()
                total += float(loss.detach()) * len(chunks[i])
            if total / len(records) < cfg.stop_loss:
                break
        d = delta.detach().cpu()
        meta = {"editor": self.tag, "model": self.model_id, "n_records": len(records), "epochs": epochs}
        return Delta({param: (d, torch.eye(d.shape[1]))}, meta)  # a dense change as exact factors: ΔW = ΔW @ I


register_editor(LocFT.tag, LocFTConfig, LocFT)

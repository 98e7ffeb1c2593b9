"""MEND (Mitchell et al., ICLR 2022) and InstructEdit (Zhang, Tian et al., IJCAI 2024).

InstructEdit is MEND trained on a mix of tasks with every edit input prefixed
by an instruction; the network is the same, so one class serves both and
`MENDConfig.instruct` says which one an editor is.

The path of one edit (`MEND.compute_delta`):
1. encode the (instructed) prompt and the target; run the blocks below the first
   edited one without autograd (`SplitRunner.bottom`);
2. replay the top blocks with the cut hidden state requiring grad, capturing each
   edited layer's input u and output; δ = ∂L/∂output by autograd, where L is the
   negative log-likelihood of the target tokens, averaged per record;
3. per edited weight: (ũ, δ̃) = g(u, δ) over the non-padding tokens, and
   ΔW = step · Σ_t δ̃_t ũ_tᵀ, kept as its exact factors (left, right).
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..delta import Delta
from ..hooks import Cut, SplitRunner
from ..hypernet import GradientTransform
from ..instructions import apply_instruction
from ..losses import row_nll
from ..models import ModelSpec
from ..records import EditRecord
from ..tokens import PairBatch, encode_pairs
from .base import read_metadata, register_editor

FORMAT = "instructedit-editor"


@dataclass
class MENDConfig:
    rank: int = 512  # hypernetwork rank; the paper's 1920 is 4x bigger and trains slower on a CPU
    n_blocks: int = 2
    n_last_layers: int = 3  # edit the MLP weights of the last 3 blocks (MEND's choice)
    edit_params: list[str] | None = None  # overrides n_last_layers
    # Signed step size per edited weight, ΔW = step · Σ δ̃ ũᵀ. Starts negative
    # (a descent step); MEND starts it positive and must learn to flip the sign.
    step_init: float = -1e-4
    instruct: bool = True  # InstructEdit: prefix each edit prompt with an instruction
    max_length: int = 128


class MEND(nn.Module):
    tag = "mend"

    def __init__(self, config: MENDConfig, spec: ModelSpec, shapes: dict[str, tuple[int, int]], model_id: str = ""):
        super().__init__()
        self.config = config
        self.spec = spec
        self.model_id = model_id
        self.shapes = dict(shapes)  # param -> (d_in, d_out)
        by_shape: dict[tuple[int, int], list[str]] = {}
        for p in spec.edit_params:
            by_shape.setdefault(self.shapes[p], []).append(p)
        self.route: dict[str, tuple[str, int]] = {}
        transforms = {}
        for (d_in, d_out), params in by_shape.items():
            key = f"{d_in}x{d_out}"
            transforms[key] = GradientTransform(d_in, d_out, config.rank, n_modes=len(params), n_blocks=config.n_blocks)
            for mode, p in enumerate(params):
                self.route[p] = (key, mode)
        self.transforms = nn.ModuleDict(transforms)
        self.steps = nn.Parameter(torch.full((len(spec.edit_params),), float(config.step_init)))

    # ------------------------------------------------------------------ construction

    @classmethod
    def for_model(cls, model, config: MENDConfig | None = None) -> "MEND":
        config = config or MENDConfig()
        spec = ModelSpec.for_model(model, n_last_layers=config.n_last_layers, edit_params=config.edit_params)
        shapes = {p: spec.shape_in_out(model, p) for p in spec.edit_params}
        return cls(config, spec, shapes, model_id=getattr(model, "name_or_path", ""))

    # ------------------------------------------------------------------ inputs

    def instructed(self, record: EditRecord, *, rng: random.Random | None = None, held_out: bool = False) -> EditRecord:
        """The record as this editor sees it: for InstructEdit, its prompt,
        rephrasings and portability prompts carry an instruction (the caller's
        own description when `extra["instruction"]` holds one; locality prompts
        never do). For plain MEND, the record unchanged."""
        if not self.config.instruct:
            return record
        own = record.extra.get("instruction") if not held_out else None
        return apply_instruction(record, rng=rng, description=own, held_out=held_out)

    def encode(self, tokenizer, prompts: list[str], answers: list[str]) -> PairBatch:
        return encode_pairs(tokenizer, prompts, answers, max_length=self.config.max_length)

    # ------------------------------------------------------------------ the math

    def step_of(self, param: str) -> torch.Tensor:
        return self.steps[self.spec.edit_params.index(param)]

    def capture(
        self, runner: SplitRunner, cut: Cut, batch: PairBatch, rows: torch.Tensor | None = None
    ) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
        """(u, δ) per edited weight over the tokens of the edit rows, and the
        top's final hidden states (detached) for every row.

        `rows` (B,) bool selects the edit examples; other rows ride along for
        a later pass (their unedited outputs) and contribute nothing. The loss
        is the per-record mean NLL of the target, summed over records, so a
        batched edit pulls each record as hard as a single one."""
        edit_rows = rows if rows is not None else torch.ones(batch.labels.shape[0], dtype=torch.bool, device=batch.labels.device)
        hidden = cut.hidden.detach().requires_grad_(True)
        answer = batch.answer_mask & edit_rows[:, None]
        with torch.enable_grad():
            h, seen = runner.top(cut, capture=self.spec.edit_params, hidden=hidden)
            logits = runner.logits(h, answer)
            loss = row_nll(logits, batch.labels[answer], answer.nonzero()[:, 0], len(edit_rows)).sum()
            grads = torch.autograd.grad(loss, [seen[p][1] for p in self.spec.edit_params])
        token_mask = batch.attention_mask.bool() & edit_rows[:, None]
        out = {}
        for p, g in zip(self.spec.edit_params, grads):
            out[p] = (seen[p][0][token_mask].float(), g[token_mask].float())
        return out, h.detach()

    def factors(self, captured: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """ΔW = left @ right per weight, differentiable w.r.t. the editor."""
        out = {}
        for p, (u, d) in captured.items():
            key, mode = self.route[p]
            u_t, d_t = self.transforms[key](u, d, mode)
            step = self.step_of(p)
            if self.spec.transposed:  # W is (in, out): ΔW = ũᵀ (step · δ̃)
                out[p] = (u_t.t(), step * d_t)
            else:  # W is (out, in): ΔW = (step · δ̃)ᵀ ũ
                out[p] = ((step * d_t).t(), u_t)
        return out

    def compute_delta(self, model, tokenizer, records: list[EditRecord], *, held_out: bool = False) -> Delta:
        """One forward and backward of the model's top plus the hypernetwork."""
        if not records:
            raise ValueError("no records to edit")
        runner = SplitRunner(model, self.spec)
        prompts = [self.instructed(r, held_out=held_out).prompt for r in records]
        batch = self.encode(tokenizer, prompts, [r.target_new for r in records]).to(model.device)
        # an instruction is mostly the same text edit after edit (a task's, or a caller's own, repeated):
        # its blocks below the cut run once per model; a new one costs a plain bottom more, once
        said = prompts[0][: len(prompts[0]) - len(records[0].prompt)] if prompts[0].endswith(records[0].prompt) else ""
        cut = runner.bottom(batch.input_ids, batch.attention_mask, prefix=tokenizer(said)["input_ids"] if said else None)
        captured, _ = self.capture(runner, cut, batch)
        with torch.no_grad():
            factors = {p: (l.detach().float().cpu(), r.detach().float().cpu()) for p, (l, r) in self.factors(captured).items()}
        return Delta(factors, {"editor": self.tag, "model": self.model_id, "n_records": len(records)})

    # ------------------------------------------------------------------ saving

    def metadata(self) -> dict[str, str]:
        return {
            "format": FORMAT,
            "editor": self.tag,
            "config": json.dumps(asdict(self.config), sort_keys=True),
            "model": self.model_id,
            "family": self.spec.family,
            "edit_params": json.dumps(list(self.spec.edit_params)),
            "shapes": json.dumps({p: list(s) for p, s in self.shapes.items()}, sort_keys=True),
        }

    def save(self, path: str | Path, *, dtype: torch.dtype = torch.float32, extra: dict | None = None) -> None:
        """Safetensors with the config in the metadata. `dtype` applies to the
        learned weights; the normalization statistics and step sizes stay fp32."""
        state = {}
        for k, v in self.state_dict().items():
            v = v.detach().cpu().contiguous()
            if v.is_floating_point() and dtype != torch.float32 and ".blocks." in k:
                v = v.to(dtype)
            state[k] = v
        meta = self.metadata()
        meta.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in (extra or {}).items()})
        meta["weights_dtype"] = str(dtype).removeprefix("torch.")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        save_file(state, str(path), metadata=meta)

    @classmethod
    def load(cls, path: str | Path, model, **overrides) -> "MEND":
        meta = read_metadata(path)
        if meta.get("format") != FORMAT or meta.get("editor") != cls.tag:
            raise ValueError(f"{path} is not a saved {cls.tag} editor")
        known = MENDConfig.__dataclass_fields__
        config = MENDConfig(**{k: v for k, v in json.loads(meta["config"]).items() if k in known})
        config = replace(config, **overrides)
        spec = ModelSpec.for_model(model, edit_params=json.loads(meta["edit_params"]), family=meta.get("family"))
        shapes = {p: tuple(s) for p, s in json.loads(meta["shapes"]).items()}
        actual = {p: spec.shape_in_out(model, p) for p in spec.edit_params}
        if actual != shapes:
            raise ValueError(f"{path} was trained for other weight shapes than this model has: {shapes} vs {actual}")
        editor = cls(config, spec, shapes, model_id=meta.get("model", ""))
        state = {k: v.float() if v.is_floating_point() and v.dtype != torch.float64 else v for k, v in load_file(str(path)).items()}
        editor.load_state_dict(state)
        editor.eval()
        return editor.to(model.device)


register_editor(MEND.tag, MENDConfig, MEND, loader=MEND.load)

"""Running a model in two halves, and capturing what MEND needs from the top half.

Layers below the first edited layer never change during an edit or during
editor training, so `SplitRunner.bottom` runs them once, without autograd, and
stops; `SplitRunner.top` replays only the edited blocks (and the head) from
that cut, optionally with some weights replaced by tensors that carry
gradients. `SplitRunner.top` with `capture=` returns, for each edited weight,
the layer input u and the layer output, so that `torch.autograd.grad` of a loss
with respect to those outputs gives δ exactly: nothing is hung on modules.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from .models import ModelSpec

log = logging.getLogger(__name__)


class _StopForward(Exception):
    pass


@dataclass
class Cut:
    """The input of block `spec.first_edit_layer`, with the call's other arguments
    (attention mask, rotary embeddings, ...) exactly as the model passed them."""

    hidden: torch.Tensor  # (B, T, d), detached
    args: tuple
    kwargs: dict


@contextmanager
def patched_weights(model: nn.Module, overrides: dict[str, torch.Tensor] | None):
    """Temporarily let named parameters read as other tensors (which may carry
    autograd history). The original Parameters are restored on exit."""
    if not overrides:
        yield
        return
    saved = []
    try:
        for name, tensor in overrides.items():
            mod_name, attr = name.rsplit(".", 1)
            mod = model.get_submodule(mod_name)
            saved.append((mod, attr, mod._parameters[attr]))
            mod._parameters[attr] = tensor
        yield
    finally:
        for mod, attr, param in reversed(saved):
            mod._parameters[attr] = param


class SplitRunner:
    """Bottom/top execution of a causal LM around its first edited block."""

    def __init__(self, model: nn.Module, spec: ModelSpec):
        self.model = model
        self.spec = spec
        self.blocks = model.get_submodule(spec.layers)
        self.norm = model.get_submodule(spec.final_norm)
        self.head = model.get_submodule(spec.lm_head)

    @torch.no_grad()
    def bottom(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, overrides: dict[str, torch.Tensor] | None = None) -> Cut:
        """The input of the first edited block, the blocks below it run once
        (with `overrides` for some of their weights, if given)."""
        captured: dict = {}

        def grab(module, args, kwargs):
            captured["args"], captured["kwargs"] = args, kwargs
            raise _StopForward

        block = self.blocks[self.spec.first_edit_layer]
        handle = block.register_forward_pre_hook(grab, with_kwargs=True)
        try:
            with patched_weights(self.model, overrides):
                self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        except _StopForward:
            pass
        finally:
            handle.remove()
        if "args" in captured and captured["args"]:
            hidden, args = captured["args"][0], captured["args"][1:]
            kwargs = dict(captured["kwargs"])
        else:  # hidden states passed by keyword
            kwargs = dict(captured["kwargs"])
            hidden, args = kwargs.pop("hidden_states"), ()
        for key in ("use_cache", "past_key_values", "cache", "past_key_value"):
            kwargs.pop(key, None)
        return Cut(hidden.detach(), tuple(args), kwargs)

    def top(
        self,
        cut: Cut,
        *,
        overrides: dict[str, torch.Tensor] | None = None,
        capture: tuple[str, ...] = (),
        hidden: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
        """Final hidden states (B, T, d), after the final norm, from the cut
        upward, and {param: (u, output)} for the weights named in `capture`
        (u detached, output in the graph). Turn them into logits with `logits`,
        only where they are needed: the head is most of the top's cost."""
        seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        handles = []
        for param in capture:
            mod_name = self.spec.module_name(param)

            def hook(module, inputs, output, param=param):
                seen[param] = (inputs[0].detach(), output)

            handles.append(self.model.get_submodule(mod_name).register_forward_hook(hook))
        h = cut.hidden if hidden is None else hidden
        try:
            with patched_weights(self.model, overrides):
                for i in range(self.spec.first_edit_layer, self.spec.n_layers):
                    out = self.blocks[i](h, *cut.args, **cut.kwargs)
                    h = out[0] if isinstance(out, tuple) else out
                h = self.norm(h)
        finally:
            for handle in handles:
                handle.remove()
        return h, seen

    def logits(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Logits (N, V) at the N positions where `mask` (B, T) is true."""
        return self.head(hidden[mask])


class MLPTop:
    """The logits at the positions `mask` picks, from a cut, when only MLP weights
    change (a refit): `SplitRunner.top` then `logits`, with less work.

    In a block of the form h + attn(ln1(h)), then + mlp(ln2(.)) (Llama and its
    kin), the first top block's attention sees a fixed input, so it runs once
    here, and so does its MLP up to its one fitted weight when only one is
    fitted (the down projection's input is then fixed too). Blocks above run
    whole, except the last, whose MLP (and the final norm and head) runs only
    at the picked positions: nothing reads the others. About 4x fewer block
    FLOPs than the whole top on a refit's batches. A model whose blocks are not
    of that form, or where the short path's logits differ from the whole top's,
    gets the whole top, as does every instance while `use_short` is false (a bench's baseline).
    """

    use_short = True

    def __init__(self, runner: SplitRunner, cut: Cut, mask: torch.Tensor, fitted: list[str], start: dict[str, torch.Tensor] | None = None):
        """`fitted`: the weights that will change; `start`: the overrides now. Every later
        call must pass the same values as `start` for every weight not in `fitted`: the
        short path's fixed parts were computed with them, and nothing checks it again."""
        self.runner, self.cut, self.mask = runner, cut, mask
        spec = runner.spec
        self.first = spec.first_edit_layer
        blocks = [runner.blocks[i] for i in range(self.first, spec.n_layers)]
        parts = ("input_layernorm", "self_attn", "post_attention_layernorm", "mlp")
        fits = all(hasattr(b, p) for b in blocks for p in parts) and not cut.args
        fits = fits and all(f".{i}.mlp." in p for p in fitted for i in [p[len(spec.layers) + 1 :].split(".")[0]])
        self.short = False
        if not (fits and self.use_short):
            return
        mods = [spec.module_name(p) for p in fitted if p.startswith(f"{spec.layers}.{self.first}.")]
        block = blocks[0]
        with torch.no_grad(), patched_weights(runner.model, start):
            attn = block.self_attn(hidden_states=block.input_layernorm(cut.hidden), **cut.kwargs)[0]
            self.mid = cut.hidden + attn
            self.x = block.post_attention_layernorm(self.mid)
            self.one = None  # (the input of its module, the module), when the first block has one fitted weight
            if len(mods) == 1:
                seen = {}
                handle = runner.model.get_submodule(mods[0]).register_forward_hook(lambda m, i, o: seen.update(u=i[0]))
                try:
                    block.mlp(self.x)
                finally:
                    handle.remove()
                self.one = (seen["u"], runner.model.get_submodule(mods[0]))
        with torch.no_grad():
            whole = runner.logits(runner.top(cut, overrides=start)[0], mask)
            self.short = True
            try:
                ok = torch.allclose(self(start), whole, atol=1e-3, rtol=1e-3)
            except Exception as exc:  # a block that looked Llama-style but is called otherwise
                log.warning("MLPTop: the short top failed (%s); running the whole top", exc)
                ok = False
            else:
                if not ok:
                    log.warning("MLPTop: the short top's logits differ from the whole top's; running the whole top")
        self.short = ok

    def __call__(self, overrides: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        return self.runner.head(self.hidden(overrides))

    def hidden(self, overrides: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """The head's input (N, d) at the picked positions: the logits are `runner.head` of it."""
        runner = self.runner
        if not self.short:
            return runner.top(self.cut, overrides=overrides)[0][self.mask]
        kwargs = self.cut.kwargs
        last = runner.spec.n_layers - 1
        with patched_weights(runner.model, overrides):
            block = runner.blocks[self.first]
            if self.one is not None:
                u, mod = self.one
                weight = mod.weight  # the override, if any
            if self.first == last:  # attention fixed: the MLP only where picked
                h = self.mid[self.mask]
                if self.one is not None:
                    h = h + torch.nn.functional.linear(u[self.mask], weight, mod.bias)
                else:
                    h = h + block.mlp(self.x[self.mask])
                return runner.norm(h)
            mlp = torch.nn.functional.linear(u, weight, mod.bias) if self.one is not None else block.mlp(self.x)
            h = self.mid + mlp
            for i in range(self.first + 1, last):
                h = runner.blocks[i](h, **kwargs)
                h = h[0] if isinstance(h, tuple) else h
            block = runner.blocks[last]
            h = h + block.self_attn(hidden_states=block.input_layernorm(h), **kwargs)[0]
            h = h[self.mask]
            return runner.norm(h + block.mlp(block.post_attention_layernorm(h)))

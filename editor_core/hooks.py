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

from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from .models import ModelSpec


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

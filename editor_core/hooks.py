"""Running a model in two halves, and capturing what MEND needs from the top half.

Layers below the first edited layer never change during an edit or during
editor training, so `SplitRunner.bottom` runs them once, without autograd, and
stops; `SplitRunner.top` replays only the edited blocks (and the head) from
that cut, optionally with some weights replaced by tensors that carry
gradients. `SplitRunner.top` with `capture=` returns, for each edited weight,
the layer input u and the layer output, so that `torch.autograd.grad` of a loss
with respect to those outputs gives δ exactly: nothing is hung on modules.
`PrefixCache` holds the bottom's work on token prefixes many calls share, and
`MLPTop` is the refit's cheaper top (low-rank corrections applied as such).
"""

from __future__ import annotations

import inspect
import logging
import threading
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from transformers import DynamicCache

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
    def bottom(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        *,
        overrides: dict[str, torch.Tensor] | None = None,
        prefix: Sequence[int] | None = None,
    ) -> Cut:
        """The input of the first edited block, the blocks below it run once
        (with `overrides` for some of their weights, if given).

        `prefix`: token ids that many calls' rows begin with (a chat template's
        system prompt, an editor's instruction). Where rows begin with some of
        them, those positions are read from `PrefixCache` instead of computed
        again; the cut is the same (a check on each prefix's first use)."""
        if prefix:
            cut = PREFIXES.bottom(self, input_ids, attention_mask, overrides or {}, tuple(prefix))
            if cut is not None:
                return cut
        hidden, args, kwargs = self.run_to(self.spec.first_edit_layer, overrides, input_ids=input_ids, attention_mask=attention_mask)
        return Cut(hidden, args, kwargs)

    def run_to(self, block: int, overrides: dict[str, torch.Tensor] | None = None, **inputs) -> tuple[torch.Tensor, tuple, dict]:
        """Run the model on `inputs` up to block `block` and stop there: (that block's
        input hidden states, detached; its other arguments as the model passed them)."""
        captured: dict = {}

        def grab(module, args, kwargs):
            captured["args"], captured["kwargs"] = args, kwargs
            raise _StopForward

        handle = self.blocks[block].register_forward_pre_hook(grab, with_kwargs=True)
        try:
            with patched_weights(self.model, overrides):
                self.model(**({"use_cache": False} | inputs))
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
        return hidden.detach(), tuple(args), kwargs

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


@dataclass(frozen=True)
class _Prefix:
    """One prefix's keys and values in the blocks below `depth`, and its hidden states entering block `depth`."""

    ids: tuple[int, ...]
    keys_values: tuple[tuple[torch.Tensor, torch.Tensor], ...]  # per block: (1, heads, P, head_dim)
    hidden: torch.Tensor  # (1, P, d)
    stamp: tuple  # the weights below `depth` it was computed with: (identity, in-place version) each


class PrefixCache:
    """Token prefixes that many bottom passes begin with, computed once per model.

    Edits and refit overrides change weights in or above the first edited
    block only, so a prefix's keys and values in the blocks below the lowest
    block a call overrides, and its hidden states entering that block, are the
    same call after call. Each entry records the weights it was computed with
    (the tensors and their in-place versions, `_stamp`) and is dropped once any
    of them is replaced or written in place. A call that passes a prefix runs
    only the rest of each row through those blocks, attending to the held keys
    and values (each row sees as many of them as it shares with the prefix, at
    its own positions), then the blocks from the lowest overridden one to the
    cut over whole rows, as `SplitRunner.bottom` would. When an entry is made,
    the batch it is made for is also run through the plain bottom and the two
    cuts compared (hidden states and block arguments): a model whose cache,
    masks or positions behave otherwise is not cached, nor one whose cached
    pass fails.
    """

    size = 32  # prefixes held per model, the least recently used dropped first

    def __init__(self):
        self._held: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> OrderedDict[(ids, depth)] -> _Prefix
        self._refused: weakref.WeakSet = weakref.WeakSet()  # models where the check failed
        self._lock = threading.Lock()

    def bottom(
        self,
        runner: SplitRunner,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        overrides: dict[str, torch.Tensor],
        prefix: tuple[int, ...],
    ) -> Cut | None:
        """The cut of `SplitRunner.bottom`, or None where the prefix cannot serve these rows."""
        model, spec = runner.model, runner.spec
        if model in self._refused or not _one_kind_of_block(model):
            return None
        # the lowest block an override touches (one outside the blocks, 0: nothing below it is fixed)
        depth = min([spec.first_edit_layer, *(spec.block_of(name) or 0 for name in overrides)])
        if depth <= 0:
            return None
        lengths = attention_mask.sum(1).tolist()
        rows = input_ids.tolist()
        if any(attention_mask[i, :n].min() < 1 for i, n in enumerate(lengths) if n):  # right padding only
            return None
        shared = [_common(row[:n], prefix, n - 1) for row, n in zip(rows, lengths)]
        if max(shared) < 2:
            return None
        entry, fresh = self._entry(runner, prefix[: max(shared)], depth)
        if entry is None:
            return None
        try:
            cut = self._bottom(runner, entry, input_ids, attention_mask, overrides, depth, lengths, shared)
        except Exception as exc:  # the plain bottom still serves: say so once, and stop caching for this model
            log.warning("PrefixCache: the cached bottom failed for %s (%s); not caching it", type(model).__name__, exc)
            self._refused.add(model)
            return None
        if fresh:  # the first use of this prefix on this model: the same cut as the plain bottom?
            plain, args, kwargs = runner.run_to(spec.first_edit_layer, overrides, input_ids=input_ids, attention_mask=attention_mask)
            real = attention_mask.bool()
            # per position, against its largest value (the residual stream holds a few huge ones), within
            # what rounding moves in this dtype (the plain bottom itself moves that much with the batch's shape)
            error, scale = (cut.hidden[real] - plain[real]).float().abs().amax(-1), plain[real].float().abs().amax(-1)
            close = bool((error <= max(1e-4, 4 * torch.finfo(plain.dtype).eps) * scale).all())
            # and the arguments the cut's block gets (masks, rotary tables), here taken from block 0
            if not (close and _same((cut.args, cut.kwargs), (args, kwargs))):
                log.warning("PrefixCache: the cached bottom differs from the plain one for %s; not caching it", type(model).__name__)
                self._refused.add(model)
                return Cut(plain, args, kwargs)
        return cut

    def _entry(self, runner: SplitRunner, ids: tuple[int, ...], depth: int) -> tuple[_Prefix | None, bool]:
        model = runner.model
        stamp = _stamp(runner, depth)
        with self._lock:
            held = self._held.setdefault(model, OrderedDict())
            for name in [k for k, e in held.items() if k[1] == depth and not _stamp_holds(e.stamp, stamp)]:
                del held[name]  # computed with weights that have changed since
            for (have, d), entry in held.items():  # a longer prefix serves a shorter one: positions only see earlier ones
                if d == depth and have[: len(ids)] == ids:
                    held.move_to_end((have, d))
                    n = len(ids)
                    keys_values = tuple((k[:, :, :n], v[:, :, :n]) for k, v in entry.keys_values)
                    return _Prefix(ids, keys_values, entry.hidden[:, :n], stamp), False
        cache = DynamicCache()
        device = next(model.parameters()).device
        ids_t = torch.tensor([ids], device=device)
        try:
            inputs = {"input_ids": ids_t, "attention_mask": torch.ones_like(ids_t), "use_cache": True, _cache_arg(model): cache}
            hidden, _, _ = runner.run_to(depth, None, **inputs)
            keys_values = tuple((cache.layers[i].keys, cache.layers[i].values) for i in range(depth))
        except Exception as exc:  # a model whose cache does not hold plain per-layer keys and values
            log.warning("PrefixCache: cannot hold prefixes for %s (%s)", type(model).__name__, exc)
            self._refused.add(model)
            return None, False
        entry = _Prefix(ids, keys_values, hidden, stamp)
        with self._lock:
            held[(ids, depth)] = entry
            while len(held) > self.size:
                held.popitem(last=False)
        return entry, True

    @staticmethod
    def _bottom(
        runner: SplitRunner,
        entry: _Prefix,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        overrides: dict[str, torch.Tensor],
        depth: int,
        lengths: list[int],
        shared: list[int],
    ) -> Cut:
        model, first = runner.model, runner.spec.first_edit_layer
        batch, held = len(lengths), len(entry.ids)
        rest = max(n - m for n, m in zip(lengths, shared))
        device = input_ids.device
        ids = torch.zeros((batch, rest), dtype=torch.long, device=device)
        mask = torch.zeros((batch, held + rest), dtype=torch.long, device=device)
        positions = torch.zeros((batch, rest), dtype=torch.long, device=device)
        for i, (n, m) in enumerate(zip(lengths, shared)):
            ids[i, : n - m] = input_ids[i, m:n]
            mask[i, :m] = 1  # the part of the prefix this row shares
            mask[i, held : held + n - m] = 1
            positions[i, : n - m] = torch.arange(m, n, device=device)
            positions[i, n - m :] = n - 1  # padding: no position past the row's own (nor the model's limit)
        cache = DynamicCache()
        for i, (k, v) in enumerate(entry.keys_values):
            cache.update(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1), i)
        tail, _, _ = runner.run_to(
            depth, None, input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **{_cache_arg(model): cache}
        )
        hidden = torch.zeros((batch, input_ids.shape[1], tail.shape[-1]), dtype=tail.dtype, device=device)
        for i, (n, m) in enumerate(zip(lengths, shared)):
            hidden[i, :m] = entry.hidden[0, :m]
            hidden[i, m:n] = tail[i, : n - m]
        # the whole rows' block arguments (masks, rotary tables), from a pass that stops at once
        _, args, kwargs = runner.run_to(0, None, input_ids=input_ids, attention_mask=attention_mask)
        with patched_weights(model, overrides):
            for i in range(depth, first):
                out = runner.blocks[i](hidden, *args, **kwargs)
                hidden = out[0] if isinstance(out, tuple) else out
        return Cut(hidden.detach(), args, kwargs)


PREFIXES = PrefixCache()


def _common(row: list[int], prefix: tuple[int, ...], most: int) -> int:
    n = 0
    for a, b in zip(row[:most], prefix):
        if a != b:
            break
        n += 1
    return n


def _stamp(runner: SplitRunner, depth: int) -> tuple:
    """Every weight outside blocks `depth` and up (the embeddings, the blocks below, the head), as
    it is now: the tensor itself, weakly held, and its in-place version (which writes through
    `.data` do not bump: those go unseen)."""
    above = tuple(f"{runner.spec.layers}.{i}." for i in range(depth, runner.spec.n_layers))
    return tuple((weakref.ref(p), p._version) for name, p in runner.model.named_parameters() if not name.startswith(above))


def _stamp_holds(then: tuple, now: tuple) -> bool:
    """The same tensors, none written in place since."""
    return len(then) == len(now) and all(a() is b() and u == v for (a, u), (b, v) in zip(then, now))


def _one_kind_of_block(model: nn.Module) -> bool:
    """Whether every block gets the same arguments (no sliding-window blocks between full ones):
    the cut's block arguments are then block 0's, which a pass that stops at once gives."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    kinds = getattr(config, "layer_types", None)
    return not kinds or len(set(kinds)) == 1


def _same(a, b) -> bool:
    """Equal nested arguments, tensors compared exactly."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a is b or a == b


def _cache_arg(model: nn.Module) -> str:
    """What the model's forward calls its key/value cache (`cache` in newer transformers)."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


class MLPTop:
    """The logits at the positions `mask` picks, from a cut, when only MLP weights
    change (a refit): `SplitRunner.top` then `logits`, with less work.

    In a block of the form h + attn(ln1(h)), then + mlp(ln2(.)) (Llama and its
    kin), the first top block's attention sees a fixed input, so it runs once
    here, and so does its MLP up to its one fitted weight when only one is
    fitted (the down projection's input is then fixed too). Blocks above run
    whole, except the last, whose MLP (and the final norm and head) runs only
    at the picked positions: nothing reads the others. About 4x fewer block
    FLOPs than the whole top on a refit's batches. A refit's corrections come
    as low-rank parts (`LowRank`, A @ B on a weight), applied as x Bᵀ Aᵀ where
    the short path reads the weight in a gated MLP, made dense elsewhere. A model
    whose blocks are not of that form, or where the short path's logits (with
    and without low-rank parts) differ from the whole top's on the first batch
    of a layout (the check is held per model), gets the whole top, as does
    every instance while `use_short` is false (a bench's baseline).
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
        fits = fits and all(f".{spec.block_of(p)}.mlp." in p for p in fitted)
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
                self.one_name = next(p for p in fitted if spec.module_name(p) == mods[0])
        # checked once per model and layout (which weights are fitted, and so which path runs)
        layout = (self.first, tuple(fitted), self.one is not None, cut.hidden.dtype)
        with self._lock:
            known = self._checked.setdefault(runner.model, {}).get(layout)
        if known is None:
            known = self._check(start, fitted)
            if known is not None:  # a comparison made (a failed run, out of memory say, is not held)
                with self._lock:
                    self._checked[runner.model][layout] = known
        self.short = bool(known)

    _checked: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {layout: whether the short path agreed}
    _lock = threading.Lock()

    @torch.no_grad()
    def _check(self, start: dict[str, torch.Tensor] | None, fitted: list[str]) -> bool | None:
        """Whether the short path gives the whole top's logits on this batch, with and without
        low-rank parts (None: the short path failed to run)."""
        runner = self.runner
        whole = runner.logits(runner.top(self.cut, overrides=start)[0], self.mask)
        self.short = True
        try:
            # and through the low-rank path with zero parts: its hand-written MLP against the model's
            weights = {p: runner.model.get_parameter(p) for p in fitted}
            zero = {p: (w.new_zeros(w.shape[0], 1), w.new_zeros(1, w.shape[1])) for p, w in weights.items()}
            ok = all(torch.allclose(self(start, low), whole, atol=1e-3, rtol=1e-3) for low in (None, zero))
        except Exception as exc:  # a block that looked Llama-style but is called otherwise
            log.warning("MLPTop: the short top failed (%s); running the whole top", exc)
            return None
        if not ok:
            log.warning("MLPTop: the short top's logits differ from the whole top's; running the whole top")
        return ok

    def __call__(self, overrides: dict[str, torch.Tensor] | None = None, low_rank: LowRank | None = None) -> torch.Tensor:
        return self.runner.head(self.hidden(overrides, low_rank))

    def hidden(self, overrides: dict[str, torch.Tensor] | None = None, low_rank: LowRank | None = None) -> torch.Tensor:
        """The head's input (N, d) at the picked positions: the logits are `runner.head` of it.
        `low_rank`: {weight: (A, B)}, added to the overrides (or the weight) as A @ B; where the
        short path reads that weight in an MLP it applies them as x Bᵀ Aᵀ, never making A @ B."""
        runner = self.runner
        low = dict(low_rank or {})
        if not self.short:
            return runner.top(self.cut, overrides=_with_dense(runner.model, overrides, low))[0][self.mask]
        kwargs = self.cut.kwargs
        last = runner.spec.n_layers - 1
        # the low-rank parts this path applies as such: the first block's one fitted weight, or its MLP's, and the last block's MLP
        own = {self.one_name} if self.one is not None else set(self._mlp_weights(self.first))
        own |= set(self._mlp_weights(last))
        dense = {p: ab for p, ab in low.items() if p not in own}
        with patched_weights(runner.model, _with_dense(runner.model, overrides, dense)):
            block = runner.blocks[self.first]
            if self.one is not None:
                u, mod = self.one
                one = low.get(self.one_name)
            if self.first == last:  # attention fixed: the MLP only where picked
                h = self.mid[self.mask]
                if self.one is not None:
                    h = h + _linear(u[self.mask], mod, one)
                else:
                    h = h + self._mlp(self.first, self.x[self.mask], low)
                return runner.norm(h)
            mlp = _linear(u, mod, one) if self.one is not None else self._mlp(self.first, self.x, low)
            h = self.mid + mlp
            for i in range(self.first + 1, last):
                h = runner.blocks[i](h, **kwargs)
                h = h[0] if isinstance(h, tuple) else h
            block = runner.blocks[last]
            h = h + block.self_attn(hidden_states=block.input_layernorm(h), **kwargs)[0]
            h = h[self.mask]
            return runner.norm(h + self._mlp(last, block.post_attention_layernorm(h), low))

    def _mlp_weights(self, block: int) -> dict[str, str]:
        """{weight name: projection} of a gated MLP (gate, up, down) in `block`; empty for another kind of MLP."""
        mlp = self.runner.blocks[block].mlp
        if not all(hasattr(mlp, p) for p in ("gate_proj", "up_proj", "down_proj", "act_fn")):
            return {}
        return {f"{self.runner.spec.layers}.{block}.mlp.{p}.weight": p for p in ("gate_proj", "up_proj", "down_proj")}

    def _mlp(self, block: int, x: torch.Tensor, low: LowRank) -> torch.Tensor:
        names = self._mlp_weights(block)
        mlp = self.runner.blocks[block].mlp
        if not any(n in low for n in names):
            return mlp(x)
        gate, up, down = (low.get(n) for n in names)
        return _linear(mlp.act_fn(_linear(x, mlp.gate_proj, gate)) * _linear(x, mlp.up_proj, up), mlp.down_proj, down)


LowRank = dict[str, tuple[torch.Tensor, torch.Tensor]]


def _linear(x: torch.Tensor, mod: nn.Module, ab: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
    """`mod`(x) with its weight (an override, if patched in) plus A @ B, applied as x Bᵀ Aᵀ."""
    y = torch.nn.functional.linear(x, mod.weight, mod.bias)
    if ab is None:
        return y
    a, b = ab
    return y + torch.nn.functional.linear(torch.nn.functional.linear(x, b.to(x.dtype)), a.to(x.dtype))


def _with_dense(model: nn.Module, overrides: dict[str, torch.Tensor] | None, low: LowRank) -> dict[str, torch.Tensor]:
    """The overrides with each low-rank part made dense and added (to the override, or to the weight)."""
    out = dict(overrides or {})
    for name, (a, b) in low.items():
        weight = out.get(name, model.get_parameter(name))
        out[name] = (weight.float() + a.float() @ b.float()).to(weight.dtype)
    return out

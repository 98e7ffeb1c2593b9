import dataclasses

import pytest
import torch

from editor_core.chat import chat_prefix, chat_prompt
from editor_core.hooks import PREFIXES, Cut, MLPTop, PrefixCache, SplitRunner
from editor_core.models import ModelSpec, tiny_model
from editor_core.tokens import encode_pairs


def _case(model, tok, n_fitted: int):
    spec = ModelSpec.for_model(model)
    fitted = list(spec.edit_params[-n_fitted:])
    first = min(int(p[len(spec.layers) + 1 :].split(".")[0]) for p in fitted)
    runner = SplitRunner(model, dataclasses.replace(spec, first_edit_layer=first))
    batch = encode_pairs(tok, ["The capital of Peru is", "Where was Ada born? Answer:"], ["Quito", "in Oslo, Norway"])
    cut = runner.bottom(batch.input_ids, batch.attention_mask)
    gen = torch.Generator().manual_seed(0)
    # every weight of the top moved a little (the unfitted ones stay so), the fitted ones carry a gradient
    params = [p for p in spec.edit_params if int(p[len(spec.layers) + 1 :].split(".")[0]) >= first]
    start = {p: model.get_parameter(p) + 0.05 * torch.randn(model.get_parameter(p).shape, generator=gen) for p in params}
    return runner, cut, batch.answer_mask, fitted, start


@pytest.mark.parametrize("n_fitted", [1, 2, 4, 5, 7])  # the first fitted block: the last or not, one or more fitted
def test_mlp_top_gives_the_whole_tops_logits_and_gradients(tiny_llama, n_fitted):
    model, tok = tiny_llama
    runner, cut, mask, fitted, start = _case(model, tok, n_fitted)
    top = MLPTop(runner, cut, mask, fitted, start)
    assert top.short, "Llama blocks take the short path"
    grads = []
    for short in (True, False):
        top.short = short
        moved = {p: (w.detach().clone().requires_grad_(True) if p in fitted else w) for p, w in start.items()}
        logits = top(moved)
        torch.log_softmax(logits, -1)[:, 3].sum().backward()
        grads.append((logits.detach(), [moved[p].grad for p in fitted]))
    (short_logits, short_grads), (whole_logits, whole_grads) = grads
    assert short_logits.shape == (int(mask.sum()), model.config.vocab_size)
    torch.testing.assert_close(short_logits, whole_logits, atol=1e-5, rtol=1e-4)
    for a, b in zip(short_grads, whole_grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_mlp_top_takes_the_whole_top_where_blocks_differ(tiny):
    model, tok = tiny
    runner, cut, mask, fitted, start = _case(model, tok, 2)
    top = MLPTop(runner, cut, mask, fitted, start)
    assert top.short == (model.config.model_type == "llama")  # GPT-2 blocks name their parts otherwise
    h, _ = runner.top(cut, overrides=start)
    torch.testing.assert_close(top(start), runner.logits(h, mask), atol=1e-5, rtol=1e-4)


def _prefix_case(model, tok):
    """Rows that begin with the chat template's fixed text, in full or in part, and one that does not."""
    spec = ModelSpec.for_model(model)
    prefix = tok(chat_prefix(tok))["input_ids"]
    forms = [chat_prompt(tok, "What is the capital of Peru?"), "The capital of Peru is", chat_prompt(tok, "Who wrote Hamlet?")]
    forms.append(tok.decode(prefix[: len(prefix) // 2]) + " and then something else")
    batch = encode_pairs(tok, forms, [" Quito", " Quito", " Charles Dickens, in 1850", " ok"])
    first = spec.n_layers - 1
    runner = SplitRunner(model, dataclasses.replace(spec, first_edit_layer=first))
    gen = torch.Generator().manual_seed(1)
    below = {p: model.get_parameter(p) + 0.05 * torch.randn(model.get_parameter(p).shape, generator=gen) for p in spec.edit_params}
    below = {p: w for p, w in below.items() if f".{first - 1}." in p}  # weights in the block below the cut
    return runner, batch, prefix, below


@pytest.mark.parametrize("overridden", [False, True])
def test_a_prefix_held_once_gives_the_plain_bottoms_cut(tiny, overridden):
    model, tok = tiny
    runner, batch, prefix, below = _prefix_case(model, tok)
    overrides = below if overridden else None
    plain = runner.bottom(batch.input_ids, batch.attention_mask, overrides=overrides)
    for _ in range(2):  # built and checked, then read
        cut = runner.bottom(batch.input_ids, batch.attention_mask, overrides=overrides, prefix=prefix)
        real = batch.attention_mask.bool()
        torch.testing.assert_close(cut.hidden[real], plain.hidden[real], atol=1e-5, rtol=1e-4)
        h, _ = runner.top(cut)
        torch.testing.assert_close(
            runner.logits(h, batch.answer_mask), runner.logits(runner.top(plain)[0], batch.answer_mask), atol=1e-5, rtol=1e-4
        )
    assert model not in PREFIXES._refused and PREFIXES._held[model], "the prefix is held, not refused"


@pytest.mark.parametrize("how", ["in place", "replaced"])
def test_a_held_prefix_is_computed_again_after_a_weight_below_it_changes(how):
    model, tok = tiny_model("llama")  # its own copy: a weight changes here
    runner, batch, prefix, _ = _prefix_case(model, tok)
    runner.bottom(batch.input_ids, batch.attention_mask, prefix=prefix)
    assert PREFIXES._held[model], "the prefix is held"
    mlp = model.get_submodule(f"{runner.spec.layers}.0.mlp.down_proj")
    with torch.no_grad():
        if how == "in place":
            mlp.weight.mul_(1.5)
        else:  # a new tensor in its place, as loading weights does
            mlp.weight = torch.nn.Parameter(mlp.weight * 1.5, requires_grad=False)
    cut = runner.bottom(batch.input_ids, batch.attention_mask, prefix=prefix)
    plain = runner.bottom(batch.input_ids, batch.attention_mask)
    real = batch.attention_mask.bool()
    torch.testing.assert_close(cut.hidden[real], plain.hidden[real], atol=1e-5, rtol=1e-4)


def test_a_row_as_long_as_the_model_allows_beside_a_held_prefix():
    """Padding never takes a position past the model's limit (GPT-2's position table is finite)."""
    model, tok = tiny_model("gpt2")
    runner, batch, prefix, _ = _prefix_case(model, tok)
    limit = model.config.n_positions
    long = [tok.eos_token_id] * (limit - 3)
    rows = [batch.input_ids[0][batch.attention_mask[0].bool()].tolist(), long]
    ids = torch.zeros((2, limit - 3), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, : len(r)], mask[i, : len(r)] = torch.tensor(r), 1
    cut = runner.bottom(ids, mask, prefix=prefix)
    plain = runner.bottom(ids, mask)
    torch.testing.assert_close(cut.hidden[mask.bool()], plain.hidden[mask.bool()], atol=1e-5, rtol=1e-4)
    assert model not in PREFIXES._refused


def test_a_model_whose_cached_bottom_differs_is_not_cached(monkeypatch):
    """The check on an entry's first batch: a cached pass that gives another cut is caught,
    the plain cut is returned, and the model is not cached again."""
    model, tok = tiny_model("llama")
    runner, batch, prefix, _ = _prefix_case(model, tok)
    plain = runner.bottom(batch.input_ids, batch.attention_mask)
    wrong = PrefixCache._bottom

    def shifted(*args):
        cut = wrong(*args)
        return Cut(cut.hidden + 1.0, cut.args, cut.kwargs)

    monkeypatch.setattr(PrefixCache, "_bottom", staticmethod(shifted))
    cut = runner.bottom(batch.input_ids, batch.attention_mask, prefix=prefix)
    torch.testing.assert_close(cut.hidden, plain.hidden)
    assert model in PREFIXES._refused
    monkeypatch.undo()
    assert PREFIXES.bottom(runner, batch.input_ids, batch.attention_mask, {}, tuple(prefix)) is None


@pytest.mark.parametrize("n_fitted", [1, 2, 4, 5, 7])
def test_mlp_top_applies_low_rank_parts_as_the_dense_sum_would(tiny, n_fitted):
    """A @ B added to each fitted weight: the same logits and gradients for A and B as the
    whole top with the dense sums (the short path never makes A @ B)."""
    model, tok = tiny
    runner, cut, mask, fitted, start = _case(model, tok, n_fitted)
    top = MLPTop(runner, cut, mask, fitted, start)
    assert top.short == (model.config.model_type == "llama")  # the low-rank path is the short path's
    gen = torch.Generator().manual_seed(2)
    parts = {
        p: (torch.randn(start[p].shape[0], 3, generator=gen) * 0.1, torch.randn(3, start[p].shape[1], generator=gen) * 0.1) for p in fitted
    }
    results = []
    for low_rank in (True, False):
        low = {p: (a.clone().requires_grad_(True), b.clone().requires_grad_(True)) for p, (a, b) in parts.items()}
        if low_rank:
            logits = top(start, low)
        else:
            dense = {p: (w + low[p][0] @ low[p][1] if p in low else w) for p, w in start.items()}
            logits = runner.logits(runner.top(cut, overrides=dense)[0], mask)
        torch.log_softmax(logits, -1)[:, 3].sum().backward()
        results.append((logits.detach(), [t.grad for p in fitted for t in low[p]]))
    (low_logits, low_grads), (dense_logits, dense_grads) = results
    torch.testing.assert_close(low_logits, dense_logits, atol=1e-5, rtol=1e-4)
    for a, b in zip(low_grads, dense_grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_mlp_tops_check_is_held_per_model_and_layout(monkeypatch):
    """The short path is checked against the whole top on a layout's first batch; later
    instances on the same model and layout take that answer (here: a short path made
    wrong, refused, and still refused once it is right again), another layout is checked."""
    model, tok = tiny_model("llama")  # its own copy: the answers held for it stay with it
    runner, cut, mask, fitted, start = _case(model, tok, 2)
    right = MLPTop._mlp
    monkeypatch.setattr(MLPTop, "_mlp", lambda self, block, x, low: right(self, block, x, low) + 1.0)
    assert not MLPTop(runner, cut, mask, fitted, start).short
    monkeypatch.undo()
    assert not MLPTop(runner, cut, mask, fitted, start).short, "the same layout: the held answer"
    runner, cut, mask, fitted, start = _case(model, tok, 4)
    assert MLPTop(runner, cut, mask, fitted, start).short, "another layout: checked on its own"

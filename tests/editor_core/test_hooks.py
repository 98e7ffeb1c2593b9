import dataclasses

import pytest
import torch

from editor_core.hooks import MLPTop, SplitRunner
from editor_core.models import ModelSpec
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

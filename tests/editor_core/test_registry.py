"""The editor registry (editor_core/editors/base.py): every built-in editor is
registered by importing the package, built by tag from its own config class,
and the places that build editors by name go through it."""

import pytest
import torch

from editor_core.editors import (
    FTL,
    MEND,
    UNTRAINED,
    FTLConfig,
    MENDConfig,
    build_editor,
    get_editor,
    load_editor,
    registered,
    untrained_editor,
)
from editor_core.records import EditRecord
from editor_core.report import load_method, parse_editor
from service.components import load_components
from service.settings import Settings


def test_builtin_editors_register_on_import():
    assert {"mend", "ft-l"} <= set(registered())
    assert (get_editor("ft-l").config_cls, get_editor("ft-l").editor_cls) == (FTLConfig, FTL)
    assert (get_editor("mend").config_cls, get_editor("mend").editor_cls) == (MENDConfig, MEND)
    with pytest.raises(ValueError, match="unknown editor 'rome'"):
        get_editor("rome")


def test_build_editor_reads_the_config_class(tiny_llama):
    model, tok = tiny_llama
    ftl = build_editor("ft-l", model, steps=3, eps=1e-3)
    assert isinstance(ftl, FTL) and ftl.config == FTLConfig(steps=3, eps=1e-3)
    mend = build_editor("mend", model, rank=8, instruct=False)
    assert isinstance(mend, MEND) and mend.config == MENDConfig(rank=8, instruct=False) and not mend.training
    delta = mend.compute_delta(model, tok, [EditRecord(task="counterfact", prompt="The sky is", target_new="green")])
    assert set(delta.factors) == set(mend.spec.edit_params)
    with pytest.raises(ValueError, match="no field"):
        build_editor("mend", model, rnak=8)


def test_saved_editor_loads_by_its_tag(tiny_llama, tmp_path):
    model, _ = tiny_llama
    mend = build_editor("mend", model, rank=8)
    mend.save(tmp_path / "e.safetensors")
    again = load_editor(tmp_path / "e.safetensors", model)
    assert isinstance(again, MEND) and again.config == mend.config
    assert all(torch.equal(a, b) for a, b in zip(mend.state_dict().values(), again.state_dict().values()))


def test_an_untrained_editor_is_the_same_everywhere(tiny_llama):
    """The CLI/evaluation ('untrained') and the service (allow_untrained_editor) build the same editor."""
    model, _ = tiny_llama
    default = get_editor(UNTRAINED).config_cls()
    cli_side = load_method("untrained", model)
    assert isinstance(cli_side, MEND) and cli_side.config == default == untrained_editor(model).config
    assert cli_side.config.instruct is True  # MENDConfig's default decides, as for the shipped editor
    assert isinstance(load_method("ft-l", model), FTL) and parse_editor("ft-l") == ("ft-l", "ft-l")


def test_the_service_builds_its_untrained_editor_through_the_registry(tmp_path):
    settings = Settings(model="tiny-llama", editor_path=tmp_path / "missing.safetensors", allow_untrained_editor=True,
                        store_dir=tmp_path / "store", device="cpu")
    components = load_components(settings)
    assert components.trained is False and components.editor.config == get_editor(UNTRAINED).config_cls()


@pytest.mark.parametrize("tag", registered())
def test_every_registered_editor_keeps_the_contract(tag, tiny_llama):
    """Built by tag with its config's defaults, an editor returns a Delta over its
    spec's weights, of their shapes, and leaves the model exactly as it was."""
    model, tok = tiny_llama
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    editor = build_editor(tag, model)
    delta = editor.compute_delta(model, tok, [EditRecord(task="counterfact", prompt="The sky is", target_new="green")])
    assert set(delta.factors) == set(editor.spec.edit_params)
    for name, (left, right) in delta.factors.items():
        assert (left @ right).shape == model.get_parameter(name).shape
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
